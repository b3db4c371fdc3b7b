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
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
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


class NLHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  reduction: int = 2
  use_scale: bool = True
  mode: str = "embedded_gaussian"
  kernel_size: int = 3
  dilation: int = 1
  concat_input: bool = True
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = inputs = base.select_inputs(features, self.in_index, self.input_transform)
    def conv(name):
      return layers.ConvBNAct(self.channels, self.kernel_size, dilation=self.dilation,
                              dtype=self.dtype, name=name)

    x = conv("convs_0")(x, train)
    x = NonLocal2d(reduction=self.reduction, use_scale=self.use_scale, mode=self.mode,
                   dtype=self.dtype, name="nl_block")(x, train)
    x = conv("convs_1")(x, train)
    if self.concat_input:
      x = layers.ConvBNAct(self.channels, self.kernel_size, dtype=self.dtype,
                           name="conv_cat")(jnp.concatenate([inputs, x], axis=-1), train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("nl_head", NLHead)
