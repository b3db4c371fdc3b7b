"""PSPNet's head (Zhao et al. 2017; mmseg's PSPHead): the pyramid pooling module.

The feature map is average-pooled into 1x1, 2x2, 3x3 and 6x6 bins (adaptive pooling, so any
input size works), each pooled map is reduced by a 1x1 ConvBNAct and upsampled back; the
input and the four context maps are concatenated and fused by a 3x3 `bottleneck`:

    x --+---------------------------------------------+
        +-- pool 1x1 -- conv 1x1 -- upsample ---------+
        +-- pool 2x2 -- conv 1x1 -- upsample ---------+-- concat -- bottleneck -- classify
        +-- pool 3x3 -- conv 1x1 -- upsample ---------+
        +-- pool 6x6 -- conv 1x1 -- upsample ---------+

UPerNet (uper_head.py) reuses the pyramid on its deepest map, ICNet and Fast-SCNN in their
backbones.
"""
from typing import Any, List, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


def pyramid_pooling(x: jnp.ndarray, pool_scales: Sequence[int], channels: int, train: bool,
                    dtype: Any = None, prefix: str = "psp_modules",
                    bn_momentum: float = 0.1) -> List[jnp.ndarray]:
  """mmseg's PPM: one upsampled context map per pool scale.

  Call it inside a module's compact `__call__`: the convs become its children named
  `{prefix}_{i}_1` (mmseg's `psp_modules.{i}.1`, entry 0 being the pooling; Fast-SCNN's
  global feature extractor calls its PPM `ppm`), so checkpoints convert by name.
  """
  outs = []
  for i, scale in enumerate(pool_scales):
    y = layers.adaptive_avg_pool(x, (scale, scale))
    y = layers.ConvBNAct(channels, 1, bn_momentum=bn_momentum, dtype=dtype,
                         name=f"{prefix}_{i}_1")(y, train)
    outs.append(layers.resize_to(y, x))
  return outs


class PSPHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    x = jnp.concatenate(
        [x] + pyramid_pooling(x, self.pool_scales, self.channels, train, self.dtype), axis=-1)
    x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("psp_head", PSPHead)
