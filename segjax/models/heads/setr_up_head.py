"""SETR's Naive and PUP decoders (Zheng et al., "Rethinking Semantic Segmentation from a
Sequence-to-Sequence Perspective with Transformers", CVPR 2021), as mmseg's SETRUPHead.

    ViT tokens (1/16) -> LayerNorm `norm` -> num_convs x [ConvBNAct -> bilinear x up_scale]
                      -> dropout + 1x1 `conv_seg`

Naive: one 1x1 conv then x4 (logits at 1/4). PUP (progressive upsampling): four 3x3 convs,
each followed by x2 (logits at the input's padded size). The same head with 1 or 2 convs is
SETR's auxiliary head on intermediate layers. Module names follow mmseg's
(`up_convs.{i}.0` is `up_convs_{i}_0`: a ConvModule `conv` + `bn`).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class SETRUPHead(nn.Module):
  num_classes: int
  in_index: int = -1  # which backbone map (one ViT layer)
  channels: int = 256
  num_convs: int = 1
  up_scale: int = 4
  kernel_size: int = 3  # 1 (Naive) or 3 (PUP), as mmseg allows
  norm_eps: float = 1e-6  # mmseg's norm_layer: LN, eps 1e-6
  dropout: float = 0.0
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    if self.kernel_size not in (1, 3):
      raise ConfigError(f"model.decode_head.kernel_size must be 1 or 3, got {self.kernel_size}")
    x = base.select_inputs(features, self.in_index)
    x = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, name="norm")(x)  # per token
    for i in range(self.num_convs):
      x = layers.ConvBNAct(self.channels, self.kernel_size, dtype=self.dtype,
                           name=f"up_convs_{i}_0")(x, train)
      x = layers.resize_bilinear(x, (x.shape[1] * self.up_scale, x.shape[2] * self.up_scale))
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("setr_up_head", SETRUPHead)
