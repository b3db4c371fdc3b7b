"""DANet's head (Fu et al. 2019, "Dual Attention Network"; mmseg's DAHead).

Two parallel branches on the same feature map, one attending over positions (PAM), one over
channels (CAM); each is classified on its own and their sum is classified once more:

    x --+-- pam_in_conv -- PAM -- pam_out_conv --+-- pam_conv_seg ----> pam   (aux)
        |                                        |
        |                                        +-(+)-- conv_seg -----> pam_cam (main)
        |                                        |
        +-- cam_in_conv -- CAM -- cam_out_conv --+-- cam_conv_seg ----> cam   (aux)

mmseg trains on all three with weight 1 and predicts with pam_cam, so the head returns
`(pam_cam, (pam, cam))` in every mode and declares `extra_loss_weights = (1, 1)`.

Memory: PAM forms an (HW x HW) matrix per image: 8192^2 floats (256 MiB) at 1/8 of a 512x1024
crop, 32768^2 (4 GiB per image) when testing whole 1024x2048 frames.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


def _softmax(x: jnp.ndarray) -> jnp.ndarray:
  """Softmax over the last axis, computed in float32 whatever the compute dtype."""
  return jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)


class PAM(nn.Module):
  """Position attention: each position gathers the values of all positions, weighted by the
  softmax of query.key (1x1 convs with bias, no scaling); `gamma` (init 0) scales the result
  before the residual add. mmseg builds it from its SelfAttentionBlock, whence the names."""
  channels: int  # query / key width
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape

    def project(features, name):
      return layers.Conv(features, (1, 1), dtype=self.dtype, name=name)(x).reshape(n, h * w, -1)

    query = project(self.channels, "query_project")
    key = project(self.channels, "key_project")
    value = project(c, "value_project")
    attention = _softmax(jnp.einsum("nqc,nkc->nqk", query, key))
    context = jnp.einsum("nqk,nkc->nqc", attention, value).reshape(n, h, w, c)
    return layers.Scale(name="gamma")(context) + x


class CAM(nn.Module):
  """Channel attention: each channel gathers all channels, weighted by the softmax of
  (max - energy) with energy the Gram matrix of the channels (the paper's trick that favours
  dissimilar channels); no projections, only `gamma` (init 0)."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    energy = jnp.einsum("npc,npd->ncd", flat, flat)
    attention = _softmax(jnp.max(energy, axis=-1, keepdims=True) - energy)
    out = jnp.einsum("ncd,npd->npc", attention, flat).reshape(n, h, w, c)
    return layers.Scale(name="gamma")(out) + x


class DAHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  pam_channels: int = 64
  dropout: float = 0.1
  dtype: Optional[Any] = None
  # Loss weights of the extra outputs (pam, cam); the main output pam_cam weighs 1.
  extra_loss_weights: Tuple[float, ...] = (1.0, 1.0)

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)

    def conv(name):
      return layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name=name)

    def classify(feat, name):  # mmseg's pam_cls_seg / cam_cls_seg: shared dropout rate
      feat = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(feat, deterministic=not train)
      return layers.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=name)(feat)

    pam_feat = conv("pam_in_conv")(x, train)
    pam_feat = PAM(self.pam_channels, dtype=self.dtype, name="pam")(pam_feat)
    pam_feat = conv("pam_out_conv")(pam_feat, train)

    cam_feat = conv("cam_in_conv")(x, train)
    cam_feat = CAM(name="cam")(cam_feat)
    cam_feat = conv("cam_out_conv")(cam_feat, train)

    pam_cam = base.classify(pam_feat + cam_feat, self.num_classes, self.dropout, train,
                            self.dtype)
    return pam_cam, (classify(pam_feat, "pam_conv_seg"), classify(cam_feat, "cam_conv_seg"))


HEADS.register("da_head", DAHead)
