"""Feature Pyramid Network (Lin et al. 2017) as mmseg's FPN neck with the defaults Semantic FPN
uses: 1x1 lateral convs and 3x3 output convs, both plain convs with bias (no norm, no
activation), and a top-down path that adds each coarser lateral, upsampled by nearest
neighbour to the finer map's size:

    C5 -- lateral 1x1 ----------------------- L5 -- fpn conv 3x3 -- P5
    C4 -- lateral 1x1 -- + nearest(L5) ------ L4 -- fpn conv 3x3 -- P4
    C3 -- lateral 1x1 -- + nearest(L4) ------ L3 -- fpn conv 3x3 -- P3
    C2 -- lateral 1x1 -- + nearest(L3) ------ L2 -- fpn conv 3x3 -- P2

Nearest is PyTorch's (`layers.resize_nearest`), which matters at odd sizes (7x9 -> 13x17).
`num_outs` beyond the input levels adds maps subsampled by 2 (mmseg's max_pool2d(1, stride=2)
without extra convs).
"""
import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import NECKS


class FPN(nn.Module):
  out_channels: int = 256
  num_outs: int = 4
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False
               ) -> Tuple[jnp.ndarray, ...]:
    del train  # no norm layers
    if self.num_outs < len(features):
      raise ConfigError(f"model.neck.num_outs ({self.num_outs}) is below the number of "
                        f"backbone maps ({len(features)})")
    conv = functools.partial(layers.ConvBNAct, self.out_channels, norm=False, activation=None,
                             dtype=self.dtype)
    laterals = [conv(1, name=f"lateral_convs_{i}")(x, False) for i, x in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):  # top-down
      laterals[i - 1] = laterals[i - 1] + layers.resize_nearest(laterals[i],
                                                                laterals[i - 1].shape[1:3])
    outs = [conv(3, name=f"fpn_convs_{i}")(x, False) for i, x in enumerate(laterals)]
    while len(outs) < self.num_outs:
      outs.append(outs[-1][:, ::2, ::2])
    return tuple(outs)


NECKS.register("fpn", FPN)
