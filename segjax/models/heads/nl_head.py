"""Non-local head (Wang et al. 2018, "Non-local Neural Networks"; mmseg's NLHead).

An FCN head whose two 3x3 convs sandwich one non-local block: every position of the map
attends to every other position, so a pixel's feature can draw on the whole image:

    x -- convs_0 -- nl_block -- convs_1 --+-- conv_cat -- classify
    |                                     |
    +-------------------------------------+  (concat)

    nl_block(x) = x + conv_out(softmax(theta(x) phi(x)^T / sqrt(C')) g(x))

Memory: the block forms an (HW x HW) matrix per image. At 1/8 of a 512x1024 crop that is
8192^2 floats (256 MiB); whole-image testing at 1024x2048 makes it 32768^2 (4 GiB per image).
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import fcn_head
from segjax.models.registry import HEADS

MODES = ("embedded_gaussian", "dot_product")


class NonLocal2d(nn.Module):
  """mmcv's NonLocal2d (no sub-sampling): 1x1 projections `g`, `theta`, `phi` to C/reduction
  channels (convs with bias), pairwise weights over all positions, and `conv_out` (conv + BN,
  no activation) back to C channels added to the input.

  mode "embedded_gaussian": softmax of theta.phi, scaled by 1/sqrt(C') when use_scale;
  "dot_product": theta.phi divided by the number of positions (no softmax).
  """
  reduction: int = 2
  use_scale: bool = True
  mode: str = "embedded_gaussian"
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.mode not in MODES:
      raise ConfigError(f"NonLocal2d mode must be one of {MODES}, got {self.mode!r}")
    n, h, w, c = x.shape
    inter = max(c // self.reduction, 1)

    def project(name):
      y = layers.ConvBNAct(inter, 1, norm=False, activation=None, dtype=self.dtype,
                           name=name)(x, train)
      return y.reshape(n, h * w, inter)

    g, theta, phi = project("g"), project("theta"), project("phi")
    pairwise = jnp.einsum("nqc,nkc->nqk", theta, phi)
    if self.mode == "embedded_gaussian":
      if self.use_scale:
        pairwise = pairwise / jnp.sqrt(jnp.asarray(inter, pairwise.dtype))
      pairwise = jax.nn.softmax(pairwise.astype(jnp.float32), axis=-1).astype(g.dtype)
    else:  # dot_product
      pairwise = pairwise / pairwise.shape[-1]
    y = jnp.einsum("nqk,nkc->nqc", pairwise, g).reshape(n, h, w, inter)
    return x + layers.ConvBNAct(c, 1, activation=None, dtype=self.dtype,
                                name="conv_out")(y, train)


class NLHead(fcn_head.FCNHead):
  """FCNHead (two convs, concat_input) with `nl_block` after the first conv."""
  channels: int = 512
  reduction: int = 2
  use_scale: bool = True
  mode: str = "embedded_gaussian"

  def context(self, x, train):
    return NonLocal2d(reduction=self.reduction, use_scale=self.use_scale, mode=self.mode,
                      dtype=self.dtype, name="nl_block")(x, train)


HEADS.register("nl_head", NLHead)
