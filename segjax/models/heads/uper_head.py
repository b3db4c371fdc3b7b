"""UPerNet's head (Xiao et al. 2018; mmseg's UPerHead): PSPNet's pyramid pooling on the
deepest map, then an FPN over all four maps, fused at stride 4:

    C5 -- PPM + bottleneck ------------------------- P5 ------------------- upsample --+
    C4 -- lateral 1x1 -- + upsample(P5) ----------- P4 -- fpn conv 3x3 -- upsample --+
    C3 -- lateral 1x1 -- + upsample(P4) ----------- P3 -- fpn conv 3x3 -- upsample --+-- concat
    C2 -- lateral 1x1 -- + upsample(P3) ----------- P2 -- fpn conv 3x3 --------------+     |
                                                                    fpn_bottleneck 3x3 -- classify

Every resize is bilinear (align_corners=False) to the next map's size, so odd input sizes work.
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.heads.psp_head import pyramid_pooling
from segjax.models.registry import HEADS


class UPerHead(nn.Module):
  num_classes: int
  in_index: Sequence[int] = (0, 1, 2, 3)
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    inputs = base.select_inputs(features, self.in_index, "multiple_select")
    conv = functools.partial(layers.ConvBNAct, self.channels, dtype=self.dtype)
    laterals = [conv(1, name=f"lateral_convs_{i}")(x, train) for i, x in enumerate(inputs[:-1])]
    top = inputs[-1]
    top = jnp.concatenate(
        [top] + pyramid_pooling(top, self.pool_scales, self.channels, train, self.dtype),
        axis=-1)
    laterals.append(conv(3, name="bottleneck")(top, train))
    for i in range(len(laterals) - 1, 0, -1):  # top-down
      laterals[i - 1] = laterals[i - 1] + layers.resize_to(laterals[i], laterals[i - 1])
    outs = [conv(3, name=f"fpn_convs_{i}")(x, train) for i, x in enumerate(laterals[:-1])]
    outs.append(laterals[-1])
    x = jnp.concatenate([outs[0]] + [layers.resize_to(y, outs[0]) for y in outs[1:]], axis=-1)
    x = conv(3, name="fpn_bottleneck")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("uper_head", UPerHead)
