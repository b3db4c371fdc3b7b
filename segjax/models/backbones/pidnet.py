"""PIDNet (Xu et al. 2023, "PIDNet: A Real-time Semantic Segmentation Network Inspired by PID
Controllers") as mmseg 1.2.2 builds PIDNet-S/M/L: DDRNet's two branches become three, named
after a PID controller's terms. The proportional (P) branch keeps detail at 1/8, the integral
(I) branch gathers context down to 1/64, and the derivative (D) branch, supervised by
boundaries, decides where P's detail should win over I's context:

    image -- stem (ddrnet.stem: c, 2c) ------------------------------------------------ 1/8
             |                          |                            |
    stage 3  I: basic x n /2 (4c, 1/16)  P: basic x m (2c)           D: basic (c | 2c)
               `-- compression_1 -------> PagFM (pag_1)               += up(diff_1(I))
             (this P map: the P output)
    stage 4  I: basic x n /2 (8c, 1/32)  P: basic x m (2c)           D: bottleneck (2c) | basic
               `-- compression_2 -------> PagFM (pag_2)               += up(diff_2(I))
                                                           (this D map: the boundary output)
    stage 5  I: bottleneck x 2 /2 (16c)  P: bottleneck (4c)          D: bottleneck (4c)
             -- PAPPM | DAPPM -- up ---> LightBag | Bag (dfm) <------------+  -------- out 1/8

PIDNet-S and -M (m = 2 stem blocks; c = 32 / 64) use the light variants: a slimmer D branch,
PAPPM (DAPPM's branches processed together by one grouped 3x3 conv) and LightBag; PIDNet-L
(m = 3, c = 64) the full ones: D of basic blocks at 2c, DAPPM and Bag. n = 3 (S, M) or 4 (L)
I-branch blocks. Every P- and D-branch input and the I branch's stage 3 and 4 outputs pass a
ReLU.

  PagFM (pixel-attention-guided fusion): sigma = sigmoid(<f_p(P), up(f_i(I))>) per pixel
      (1x1 conv + BN projections to c channels), P <- sigma up(I) + (1 - sigma) P.
  Bag (boundary-attention-guided fusion): sigma = sigmoid(D); BN-ReLU-3x3(sigma P +
      (1 - sigma) I). LightBag: 1x1(P + (1 - sigma) I) + 1x1(I + sigma P), conv + BN each.
  PAPPM: y0 = 1x1(x); y_i = up(1x1(pool_i(x))) + y0 for the four pooled views of DAPPM;
      out = 1x1(concat(y0, grouped 3x3(concat(y_1..y_4)))) + 1x1(x), BN-ReLU-conv units.

Returns (P after stage 3, out, D after stage 4): mmseg returns the first and last only in
training, the inputs of PIDHead's P and boundary classifiers; segjax always (XLA drops them at
test time). As DDRNet (ddrnet.py), mmseg runs only on sides divisible by 8 and segjax resizes
to the P branch's map. Submodule names follow mmseg's (`i_branch_layers_0_0/conv1/conv`,
`p_branch_layers_2_0/downsample/bn`, `d_branch_layers_0`, `pag_1/f_i`, `spp/processes`,
`dfm/f_p`), so mmseg checkpoints convert by name.
"""
import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.ddrnet import DAPPM, Block, residual_layer, stem
from segjax.models.registry import BACKBONES


class PagFM(nn.Module):
  """Pixel-attention-guided fusion of the I branch into the P branch (see the module
  docstring); mmseg's defaults (no ReLU first, one attention map for all channels)."""
  channels: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_p, x_i, train: bool):
    conv = functools.partial(layers.ConvBNAct, self.channels, 1, activation=None,
                             dtype=self.dtype)
    f_i = layers.resize_to(conv(name="f_i")(x_i, train), x_p)
    f_p = conv(name="f_p")(x_p, train)
    sigma = jax.nn.sigmoid(jnp.sum(f_p * f_i, axis=-1, keepdims=True))
    return sigma * layers.resize_to(x_i, x_p) + (1 - sigma) * x_p


class Bag(nn.Module):
  """Boundary-attention-guided fusion (PIDNet-L): where D sees a boundary, P's detail."""
  features: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_p, x_i, x_d, train: bool):
    sigma = jax.nn.sigmoid(x_d)
    return layers.BNActConv(self.features, 3, dtype=self.dtype,
                            name="conv")(sigma * x_p + (1 - sigma) * x_i, train)


class LightBag(nn.Module):
  """Bag's light form (PIDNet-S/M): two 1x1 conv + BN projections, summed."""
  features: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_p, x_i, x_d, train: bool):
    conv = functools.partial(layers.ConvBNAct, self.features, 1, activation=None,
                             dtype=self.dtype)
    sigma = jax.nn.sigmoid(x_d)
    return (conv(name="f_p")((1 - sigma) * x_i + x_p, train)
            + conv(name="f_i")(x_i + sigma * x_p, train))


class PAPPM(DAPPM):
  """Parallel aggregation pyramid pooling (PIDNet-S/M): DAPPM's pooled branches, each added
  to the first branch and refined together by one grouped 3x3 conv (`processes`) instead of
  one after the other."""

  @nn.compact
  def __call__(self, x, train: bool):
    y, ups = self.pyramid(x, train)
    branches = self.unit(self.branch_channels * len(ups), 3, "processes", groups=len(ups))(
        jnp.concatenate([up + y for up in ups], axis=-1), train)
    return (self.unit(self.out_channels, 1, "compression")(
        jnp.concatenate([y, branches], axis=-1), train)
            + self.unit(self.out_channels, 1, "shortcut")(x, train))


class PIDNet(nn.Module):
  channels: int = 64  # c: 32 for PIDNet-S, 64 for -M and -L
  ppm_channels: int = 96  # 96 for S and M, 112 for L
  num_stem_blocks: int = 2  # m: 2 (S, M: light D branch, PAPPM, LightBag) or 3 (L)
  num_branch_blocks: int = 3  # n: 3 (S, M) or 4 (L)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    if min(self.channels, self.ppm_channels, self.num_stem_blocks, self.num_branch_blocks) < 1:
      raise ConfigError(f"PIDNet channels, ppm_channels, num_stem_blocks and "
                        f"num_branch_blocks must be positive, got {self.channels}, "
                        f"{self.ppm_channels}, {self.num_stem_blocks}, "
                        f"{self.num_branch_blocks}")
    c, m, n, relu = self.channels, self.num_stem_blocks, self.num_branch_blocks, nn.relu
    light = m == 2  # mmseg's rule: PIDNet-S/M
    layer = functools.partial(residual_layer, train=train, downsample="conv_module",
                              dtype=self.dtype)

    def conv(features, kernel_size, name):  # conv + BN, no activation
      return layers.ConvBNAct(features, kernel_size, activation=None, dtype=self.dtype,
                              name=name)

    def d_block(y, planes, name):  # mmseg's `_make_single_layer`: a basic block, no ReLU out
      return Block(planes, "basic", out_relu=False,
                   downsample="conv_module" if y.shape[-1] != planes else None,
                   dtype=self.dtype, name=name)(y, train)

    x = stem(x, c, m, train, "conv_module", self.dtype)

    # Stage 3: P takes I's context by pixel attention, D adds I's difference.
    x_i = relu(layer(x, "basic", 4 * c, n, "i_branch_layers_0", strides=2))
    x_p = layer(x, "basic", 2 * c, m, "p_branch_layers_0")
    x_d = d_block(x, c if light else 2 * c, "d_branch_layers_0")
    x_p = PagFM(c, self.dtype, name="pag_1")(x_p, conv(2 * c, 1, "compression_1")(x_i, train),
                                             train)
    diff = conv(c if light else 2 * c, 3, "diff_1")(x_i, train)
    x_d = x_d + layers.resize_to(diff, x_d)
    p_out = x_p

    # Stage 4.
    x_i = relu(layer(x_i, "basic", 8 * c, n, "i_branch_layers_1", strides=2))
    x_p = layer(relu(x_p), "basic", 2 * c, m, "p_branch_layers_1")
    if light:
      x_d = layer(relu(x_d), "bottleneck", c, 1, "d_branch_layers_1")
    else:
      x_d = d_block(relu(x_d), 2 * c, "d_branch_layers_1")
    x_p = PagFM(c, self.dtype, name="pag_2")(x_p, conv(2 * c, 1, "compression_2")(x_i, train),
                                             train)
    x_d = x_d + layers.resize_to(conv(2 * c, 3, "diff_2")(x_i, train), x_d)
    d_out = x_d

    # Stage 5: pyramid pooling on I, then D guides the fusion of P and I.
    x_i = layer(x_i, "bottleneck", 8 * c, 2, "i_branch_layers_2", strides=2)
    x_p = layer(relu(x_p), "bottleneck", 2 * c, 1, "p_branch_layers_2")
    x_d = layer(relu(x_d), "bottleneck", 2 * c, 1, "d_branch_layers_2")
    spp = (PAPPM if light else DAPPM)(self.ppm_channels, 4 * c, dtype=self.dtype, name="spp")
    x_i = layers.resize_to(spp(x_i, train), x_p)
    dfm = (LightBag if light else Bag)(4 * c, self.dtype, name="dfm")
    return p_out, dfm(x_p, x_i, x_d, train), d_out


BACKBONES.register("pidnet", PIDNet)
