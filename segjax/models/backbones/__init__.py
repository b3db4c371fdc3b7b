"""Backbones register themselves in segjax.models.registry.BACKBONES on import."""
from segjax.models.backbones import mit  # noqa: F401
