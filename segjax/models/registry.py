"""The model-part registries (see segjax/registry.py for how a config entry is built)."""
from segjax.registry import Registry

BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
MODELS = Registry("model")
