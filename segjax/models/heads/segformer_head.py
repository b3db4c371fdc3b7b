"""SegFormer's all-MLP decoder: unify channels per stage, upsample to 1/4, fuse, classify."""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.registry import HEADS


class SegFormerHead(nn.Module):
  """Returns logits at the resolution of the first (stride-4) feature map."""
  num_classes: int
  channels: int = 256
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    size = features[0].shape[1:3]
    outs = []
    for i, f in enumerate(features):
      f = layers.Dense(self.channels, dtype=self.dtype, name=f"linear_c{i}")(f)
      outs.append(layers.resize_bilinear(f, size))
    # Deepest stage first, as in the reference implementation (matters for weight import).
    x = jnp.concatenate(outs[::-1], axis=-1)
    x = layers.Conv(self.channels, (1, 1), use_bias=False, dtype=self.dtype, name="fuse")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="fuse_bn")(x)
    x = nn.relu(x)
    # Channel-wise dropout (mmseg's Dropout2d before the classifier).
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
    return layers.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


HEADS.register("segformer_head", SegFormerHead)
