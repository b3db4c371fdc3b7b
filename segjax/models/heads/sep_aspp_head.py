"""DeepLabv3+'s head (Chen et al. 2018; mmseg's DepthwiseSeparableASPPHead): DeepLabv3's ASPP
with depthwise separable atrous branches, plus a decoder that sharpens boundaries with the
stride-4 map:

    deep map -- ASPP (separable) -- bottleneck -- upsample x4 --+
                                                                +-- concat -- sep conv 3x3
    low-level map (features[0]) -- c1_bottleneck 1x1 (48) -----+      -- sep conv 3x3 -- classify

The low-level map is always the backbone's first output, as in mmseg; `c1_in_index=None`
drops the decoder (mmseg's `c1_in_channels=0`).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.heads.aspp_head import atrous_pyramid
from segjax.models.registry import HEADS


class DepthwiseSeparableASPPHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  dilations: Sequence[int] = (1, 6, 12, 18)
  c1_in_index: Optional[int] = 0  # the low-level map of the decoder; None: no decoder
  c1_channels: int = 48
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    x = jnp.concatenate(atrous_pyramid(x, self.dilations, self.channels, train, self.dtype,
                                       separable=True), axis=-1)
    x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
    if self.c1_in_index is not None:
      c1 = layers.ConvBNAct(self.c1_channels, 1, dtype=self.dtype,
                            name="c1_bottleneck")(features[self.c1_in_index], train)
      x = jnp.concatenate([layers.resize_to(x, c1), c1], axis=-1)
    for i in range(2):
      x = layers.SeparableConvBNAct(self.channels, 3, dtype=self.dtype,
                                    name=f"sep_bottleneck_{i}")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("sep_aspp_head", DepthwiseSeparableASPPHead)
