"""ICNet's cascade feature fusion (Zhao et al. 2018; mmseg's ICNeck): the three branch maps
of the ICNet backbone (sub1 1/8, sub2 1/16, sub4 1/32) fused coarse to fine by two cascade
feature fusion units:

    sub4 -- upsample -- conv_low 3x3 dil 2 + BN + ReLU --+-- ReLU -- x_cff_24 --.
    sub2 ------------- conv_high 1x1 + BN + ReLU --------+                      |
                                                                               v
    x_cff_24 -- upsample -- conv_low 3x3 dil 2 + BN + ReLU --+-- ReLU -- x_cff_12 (1/8)
    sub1 ---------------- conv_high 1x1 + BN + ReLU ---------+

Returns (x_24, x_12, x_cff_12): each unit's upsampled low branch (after conv_low; mmseg's
"cascade label guidance" reads them with auxiliary FCN heads instead of the paper's extra
classifiers) and the fused 1/8 map the decode head classifies.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import NECKS


class CascadeFeatureFusion(nn.Module):
  out_channels: int = 128
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, low, high, train: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    low = layers.ConvBNAct(self.out_channels, 3, dilation=2, dtype=self.dtype,
                           name="conv_low")(layers.resize_to(low, high), train)
    high = layers.ConvBNAct(self.out_channels, 1, dtype=self.dtype, name="conv_high")(high,
                                                                                       train)
    return nn.relu(low + high), low


class ICNeck(nn.Module):
  out_channels: int = 128
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False
               ) -> Tuple[jnp.ndarray, ...]:
    if len(features) != 3:
      raise ConfigError(f"ICNeck fuses ICNet's three branch maps, got {len(features)} maps")
    sub1, sub2, sub4 = features
    x_cff_24, x_24 = CascadeFeatureFusion(self.out_channels, self.dtype,
                                          name="cff_24")(sub4, sub2, train)
    x_cff_12, x_12 = CascadeFeatureFusion(self.out_channels, self.dtype,
                                          name="cff_12")(x_cff_24, sub1, train)
    return x_24, x_12, x_cff_12


NECKS.register("icneck", ICNeck)
