"""DeepLabv3's head (Chen et al. 2017; mmseg's ASPPHead): atrous spatial pyramid pooling.

Parallel branches see the same map at several fields of view: image-level context (global
average pool, 1x1 conv, broadcast back), a 1x1 conv, and 3x3 convs at dilations 6, 12, 18
(the paper's rates at output stride 16; mmseg's D8 configs double them to 12, 24, 36, drawn
here); their concatenation is fused by a 3x3 `bottleneck`:

    x --+-- global pool -- conv 1x1 -- upsample --+
        +-- conv 1x1 -----------------------------+
        +-- conv 3x3, dilation 12 ----------------+-- concat -- bottleneck -- classify
        +-- conv 3x3, dilation 24 ----------------+
        +-- conv 3x3, dilation 36 ----------------+

DeepLabv3+ (sep_aspp_head.py) makes the atrous branches depthwise separable.
"""
from typing import Any, List, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


def atrous_pyramid(x: jnp.ndarray, dilations: Sequence[int], channels: int, train: bool,
                   dtype: Any = None, separable: bool = False) -> List[jnp.ndarray]:
  """The image-pool branch and one branch per dilation (1 = a 1x1 conv), each `channels`
  wide and at the size of `x`.

  Call it inside a head's compact `__call__`: the modules become the head's children named
  like mmseg's (`image_pool_1`, after the pooling at `image_pool.0`; `aspp_modules_{i}`).
  `separable` makes the dilated branches depthwise separable (DeepLabv3+).
  """
  pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
  pooled = layers.ConvBNAct(channels, 1, dtype=dtype, name="image_pool_1")(pooled, train)
  outs = [jnp.broadcast_to(pooled, x.shape[:3] + (channels,))]  # bilinear from 1x1
  for i, dilation in enumerate(dilations):
    name = f"aspp_modules_{i}"
    if dilation == 1:
      branch = layers.ConvBNAct(channels, 1, dtype=dtype, name=name)
    elif separable:
      branch = layers.SeparableConvBNAct(channels, 3, dilation=dilation, dtype=dtype, name=name)
    else:
      branch = layers.ConvBNAct(channels, 3, dilation=dilation, dtype=dtype, name=name)
    outs.append(branch(x, train))
  return outs


class ASPPHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  dilations: Sequence[int] = (1, 6, 12, 18)
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    x = jnp.concatenate(atrous_pyramid(x, self.dilations, self.channels, train, self.dtype),
                        axis=-1)
    x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("aspp_head", ASPPHead)
