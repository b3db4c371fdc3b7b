"""SETR-MLA's decoder (Zheng et al., CVPR 2021), as mmseg's SETRMLAHead: each of the MLA
neck's maps goes through two 3x3 ConvBNActs (`up_convs_{i}_0`, `up_convs_{i}_1`) and a
bilinear x up_scale, the results are concatenated (num_inputs * mla_channels channels,
mmseg's `channels`) and classified.

Maps of different sizes (not ViT's case) are resized to the first before concatenation,
where mmseg would fail.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class SETRMLAHead(nn.Module):
  num_classes: int
  in_index: Sequence[int] = (0, 1, 2, 3)
  mla_channels: int = 128
  up_scale: int = 4
  dropout: float = 0.0
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    maps = base.select_inputs(features, self.in_index, "multiple_select")
    outs = []
    for i, x in enumerate(maps):
      for j in range(2):
        x = layers.ConvBNAct(self.mla_channels, 3, dtype=self.dtype,
                             name=f"up_convs_{i}_{j}")(x, train)
      x = layers.resize_bilinear(x, (x.shape[1] * self.up_scale, x.shape[2] * self.up_scale))
      outs.append(x if not outs else layers.resize_to(x, outs[0]))
    return base.classify(jnp.concatenate(outs, axis=-1), self.num_classes, self.dropout, train,
                         self.dtype)


HEADS.register("setr_mla_head", SETRMLAHead)
