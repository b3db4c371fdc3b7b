"""CCNet's head (Huang et al. 2019, "Criss-Cross Attention"; mmseg's CCHead).

An FCN head with criss-cross attention between its two 3x3 convs. One criss-cross step lets
each pixel attend to the pixels of its own row and column (H + W - 1 of them, not H x W);
applied `recurrence` = 2 times with the same weights, information reaches every pixel:

    x -- convs_0 -- cca -- cca -- convs_1 --+-- conv_cat -- classify
    |                                       |
    +---------------------------------------+  (concat)

Memory: attention weights are (H, W, H + W) per image, 128 x 256 x 384 floats (48 MiB) for
whole-image testing at 1024x2048, unlike the (HW)^2 of a non-local block.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import fcn_head
from segjax.models.registry import HEADS


class CrissCrossAttention(nn.Module):
  """mmcv's CrissCrossAttention, in its pure-PyTorch form: dense einsums over the column
  (energy_h) and the row (energy_w) of each pixel, one softmax over both. The pixel itself
  lies on both; its column entry gets -inf so it is counted once. 1x1 query/key convs to C/8
  channels and a value conv to C (all with bias); `gamma` (init 0) scales the residual."""
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape

    def conv(features, name):
      return layers.Conv(features, (1, 1), dtype=self.dtype, name=name)(x)

    query, key, value = conv(c // 8, "query_conv"), conv(c // 8, "key_conv"), conv(c, "value_conv")
    # energy_h[n, h, w, i]: pixel (h, w) against (i, w) of its column; energy_w against (h, j).
    energy_h = jnp.einsum("nhwc,niwc->nhwi", query, key)
    energy_h = jnp.where(jnp.eye(h, dtype=bool)[:, None, :], -jnp.inf, energy_h)
    energy_w = jnp.einsum("nhwc,nhjc->nhwj", query, key)
    energy = jnp.concatenate([energy_h, energy_w], axis=-1).astype(jnp.float32)
    attention = jax.nn.softmax(energy, axis=-1).astype(value.dtype)
    out = (jnp.einsum("niwc,nhwi->nhwc", value, attention[..., :h]) +
           jnp.einsum("nhjc,nhwj->nhwc", value, attention[..., h:]))
    return layers.Scale(name="gamma")(out) + x


class CCHead(fcn_head.FCNHead):
  """FCNHead (two convs, concat_input) with `recurrence` criss-cross steps after the first
  conv, all through the one module `cca` (shared weights)."""
  channels: int = 512
  recurrence: int = 2

  def context(self, x, train):
    cca = CrissCrossAttention(dtype=self.dtype, name="cca")
    for _ in range(self.recurrence):
      x = cca(x)
    return x


HEADS.register("cc_head", CCHead)
