"""SETR's multi-level feature aggregation (Zheng et al., CVPR 2021), as mmseg's MLANeck.

    ViT layers l1..l4 -> LayerNorm `norm_i` -> 1x1 ConvBNAct `mla/channel_proj_i` -> p1..p4
    top-down sums:  m_0 = p4,  m_1 = m_0 + p3,  m_2 = m_1 + p2,  m_3 = m_2 + p1
    -> 3x3 ConvBNAct `mla/feat_extract_k` on m_k -> (o_0, ..., o_3)

The outputs come deepest first, exactly as mmseg's (o_0 is built from the last ViT layer
alone), and SETRMLAHead / the auxiliary heads index them in that order. ViT maps all share
one size; maps of different sizes (a hierarchical backbone, e.g. in the registry walk) are
bilinearly resized to the finer one before each sum, where mmseg would fail.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.registry import NECKS


class MLAModule(nn.Module):
  out_channels: int = 256
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool):
    feats = [layers.ConvBNAct(self.out_channels, 1, dtype=self.dtype,
                              name=f"channel_proj_{i}")(x, train)
             for i, x in enumerate(features)]
    mids = []
    for feat in feats[::-1]:
      mids.append(feat if not mids else layers.resize_to(mids[-1], feat) + feat)
    return tuple(layers.ConvBNAct(self.out_channels, 3, dtype=self.dtype,
                                  name=f"feat_extract_{k}")(m, train)
                 for k, m in enumerate(mids))


class MLANeck(nn.Module):
  out_channels: int = 256
  norm_eps: float = 1e-6  # mmseg's norm_layer: LN, eps 1e-6
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False
               ) -> Tuple[jnp.ndarray, ...]:
    normed = [nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name=f"norm_{i}")(x)
              for i, x in enumerate(features)]
    return MLAModule(self.out_channels, self.dtype, name="mla")(normed, train)


NECKS.register("mla", MLANeck)
