"""DDRNet's head (Hong et al. 2021; mmseg's DDRHead): one classifier on the fused 1/8 map
and, for deep supervision, a second one on the stage-3 spatial map (the backbone's first
output):

    out     -- BN-ReLU-3x3 (channels) -- BN -- ReLU -- dropout -- conv_seg     logits (main)
    stage 3 -- BN-ReLU-3x3 (channels) -- BN -- ReLU ----------- aux_cls_seg  logits (extra)

mmseg computes the second only in training and weighs its loss 0.4 (its config's second
`loss_decode` entry, the same OHEM cross-entropy as the main one); the head returns
`(logits, (aux,))` in every mode and declares `extra_loss_weights = (0.4,)`, so the extra
output trains with the head's own `loss` list at weight 0.4, as in mmseg.

Names follow mmseg's (`head_0/bn`, `head_0/conv`, `head_1`, `aux_head_*`, `conv_seg`,
`aux_cls_seg`), so mmseg checkpoints convert by name.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class DDRHead(nn.Module):
  num_classes: int
  channels: int = 64  # 64 for DDRNet-23-slim, 128 for DDRNet-23
  dropout: float = 0.0
  extra_loss_weights: Tuple[float, ...] = (0.4,)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    def head(x, name):  # mmseg's `_make_base_head`
      x = layers.BNActConv(self.channels, 3, dtype=self.dtype, name=f"{name}_0")(x, train)
      return nn.relu(layers.batch_norm(train, self.dtype, f"{name}_1")(x))

    logits = base.classify(head(features[-1], "head"), self.num_classes, self.dropout, train,
                           self.dtype)
    aux = layers.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                      name="aux_cls_seg")(head(features[0], "aux_head"))
    return logits, (aux,)


HEADS.register("ddr_head", DDRHead)
