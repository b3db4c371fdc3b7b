"""FCN head (Long et al. 2015): convs on one feature map, then a 1x1 classifier.

Mostly used as the auxiliary head for deep supervision (mmseg's `auxiliary_head`).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.registry import HEADS


class FCNHead(nn.Module):
  num_classes: int
  in_index: int = -1  # which backbone feature map to read
  channels: int = 256
  num_convs: int = 1
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = features[self.in_index]
    for i in range(self.num_convs):
      x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name=f"conv{i}")(x, train)
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)


HEADS.register("fcn_head", FCNHead)
