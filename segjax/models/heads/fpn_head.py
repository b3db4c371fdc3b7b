"""Semantic FPN's head (Kirillov et al. 2019; mmseg's FPNHead): each pyramid level is brought
to stride 4 by as many (3x3 ConvBNAct, 2x bilinear upsample) stages as it has octaves to
climb (at least one conv), and the levels are summed:

    P2 (/4)  -- conv ------------------------------------------+
    P3 (/8)  -- conv -- x2 ------------------------------------+
    P4 (/16) -- conv -- x2 -- conv -- x2 ----------------------+-- sum -- classify
    P5 (/32) -- conv -- x2 -- conv -- x2 -- conv -- x2 --------+

A doubled odd-sized map overshoots the stride-4 map by a pixel; as in mmseg, each level is
then resized (bilinear) to the first level's size before the sum.
"""
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class FPNHead(nn.Module):
  num_classes: int
  in_index: Sequence[int] = (0, 1, 2, 3)
  feature_strides: Sequence[int] = (4, 8, 16, 32)  # of the selected maps, finest first
  channels: int = 128
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    strides = tuple(self.feature_strides)
    if len(strides) != len(self.in_index) or min(strides) != strides[0]:
      raise ConfigError(f"feature_strides {strides} must give one stride per in_index "
                        f"{tuple(self.in_index)}, finest first")
    inputs = base.select_inputs(features, self.in_index, "multiple_select")
    out = None
    for i, (x, stride) in enumerate(zip(inputs, strides)):
      upsample = stride != strides[0]
      octaves = max(1, int(math.log2(stride) - math.log2(strides[0])))
      for k in range(octaves):
        # mmseg's scale_heads[i] is a Sequential interleaving ConvModules and Upsamples.
        x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype,
                             name=f"scale_heads_{i}_{2 * k if upsample else k}")(x, train)
        if upsample:
          x = layers.resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]))
      out = x if out is None else out + layers.resize_to(x, out)
    return base.classify(out, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("fpn_head", FPNHead)
