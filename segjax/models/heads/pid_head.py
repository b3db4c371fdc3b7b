"""PIDNet's head (Xu et al. 2023; mmseg's PIDHead): a classifier per branch of the PIDNet
backbone's three outputs (P after stage 3, the fused map, D after stage 4), each mmseg's
BasePIDHead (BN-ReLU-3x3 conv, BN, ReLU) and a 1x1 conv:

    fused -- i_head (channels) -- dropout -- conv_seg ---> logits (main)
    P     -- p_head (channels) -------------- p_cls_seg -> P logits        (extra 0, x 0.4)
    D     -- d_head (C_in / 4) -------------- d_cls_seg -> boundary logit  (extra 1, x 20)
                                    logits ++ boundary logit               (extra 2, x 1)

mmseg computes P and D only in training. Its loss (PIDHead.loss_by_feat, weights from its
config) is class-weighted cross-entropy on the P logits (0.4), OhemCrossEntropy on the main
logits (1), the class-balanced boundary BCE against GenerateEdge's edges (20), and
OhemCrossEntropy on the main logits once more, only at the pixels where sigmoid(boundary
logit) > 0.8 (1; PIDNet's boundary-awareness loss). The last needs two outputs, so the head
returns it a third extra output, the main logits with the boundary logit appended, for the
`boundary_ohem_cross_entropy` loss. The config gives the main `loss` and one `extra_losses`
list per extra output (configs/pidnet_s_city.py); `extra_loss_weights` are mmseg's weights.

mmseg's PIDNet config resizes the 1/8 logits to the labels and to the test image with
align_corners=True, where segjax's losses and evaluation resize half-pixel. So the head
returns every output already upsampled `upsample` (8) times the main map's size with corners
aligned: on the 1024x1024 crops and 1024x2048 frames (sides divisible by 8, as mmseg's PIDNet
needs) that is mmseg's resize exactly and segjax's own resize is then the identity.

Names follow mmseg's (`i_head/conv/bn`, `i_head/norm`, `conv_seg`, `p_cls_seg`,
`d_cls_seg`), so mmseg checkpoints convert by name.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.layers import resize_align_corners
from segjax.models.registry import HEADS


class BasePIDHead(nn.Module):
  """BN-ReLU-3x3 conv (`conv`), BN (`norm`), ReLU."""
  channels: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.BNActConv(self.channels, 3, dtype=self.dtype, name="conv")(x, train)
    return nn.relu(layers.batch_norm(train, self.dtype, "norm")(x))


class PIDHead(nn.Module):
  num_classes: int
  channels: int = 128  # 128 for PIDNet-S and -M, 256 for -L
  dropout: float = 0.1  # mmseg's BaseDecodeHead default, which PIDNet's configs keep
  # Loss weights of the extra outputs (P logits, boundary logit, logits ++ boundary logit).
  extra_loss_weights: Tuple[float, ...] = (0.4, 20.0, 1.0)
  upsample: int = 8  # outputs at this multiple of the main map, corners aligned; 1 = none
  dtype: Optional[Any] = None

  @property
  def extra_output_channels(self) -> Tuple[int, int, int]:
    """Channels of the extra outputs, for the segmentor to validate their losses."""
    return self.num_classes, 1, self.num_classes + 1

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x_p, x_i, x_d = features[0], features[1], features[2]
    size = (x_i.shape[1] * self.upsample, x_i.shape[2] * self.upsample)

    def up(y):  # float32: the losses and evaluation read these logits as they are
      return resize_align_corners(y.astype(jnp.float32), size)

    def cls(y, features, name):
      return layers.Conv(features, (1, 1), dtype=self.dtype, name=name)(y)

    logits = base.classify(BasePIDHead(self.channels, self.dtype, name="i_head")(x_i, train),
                           self.num_classes, self.dropout, train, self.dtype)
    p = cls(BasePIDHead(self.channels, self.dtype, name="p_head")(x_p, train),
            self.num_classes, "p_cls_seg")
    d = cls(BasePIDHead(x_i.shape[-1] // 4, self.dtype, name="d_head")(x_d, train), 1,
            "d_cls_seg")
    logits, p, d = up(logits), up(p), up(d)
    return logits, (p, d, jnp.concatenate([logits, d], axis=-1))


HEADS.register("pid_head", PIDHead)
