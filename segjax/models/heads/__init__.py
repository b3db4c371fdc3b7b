"""Decode heads register themselves in segjax.models.registry.HEADS on import."""
from segjax.models.heads import fcn_head  # noqa: F401
from segjax.models.heads import segformer_head  # noqa: F401
