"""OCNet's heads (Yuan & Wang, "OCNet: Object Context Network for Scene Parsing", arXiv
1809.00916), as the official code builds them (github.com/openseg-group/OCNet.pytorch:
oc_module/{base,pyramid,asp}_oc_block.py and the `context`, `cls` and `dsn` layers of
network/resnet101_{base,pyramid,asp}_oc.py), and the `ocnet` model.

A pixel's object context is the features of all pixels weighted by their similarity to it
(self-attention): an estimate of "the pixels of my object". OCNet computes it on the stride-8
map of a dilated ResNet in one of three ways (C = `channels`, 512; ABN = BatchNorm + leaky
ReLU 0.01, the official InPlaceABNSync):

  base     x -- 3x3 ABN (C) --+-- object context --+-- concat -- 1x1 ABN (C) -- classify
                              +--------------------+
  pyramid  x -- 3x3 BN (C) --+-- 1x1 ABN (4C) --------------------------+
                             +-- object context in 1x1 partition -------+
                             +-- ... in each of 2x2 partitions ---------+-- concat -- 1x1 ABN
                             +-- ... 3x3, 6x6 ---------------------------+
  asp      x -- 3x3 ABN (C) --+-- 3x3 ABN (C/2) -- object context -------+
                              +-- 1x1 BN-act (C/2) ----------------------+
                              +-- 3x3 dilation 12 / 24 / 36 (C/2 each) --+-- concat -- 1x1 ABN (C)

ASP-OC is DeepLabv3's ASPP with the image-pooling branch replaced by object context (at
half resolution: its attention runs on a 2x2 max-pooled map, upsampled back with
align_corners=True as torch 0.4 did). Widths follow the official code: keys C/2 and values C/2
(base), keys C/2 and values C (pyramid), keys C/4 and values C/2 (asp), with C = 512. The
attention's output projection `W` starts at zero (the official init), so training starts
from the plain context conv. Every network also supervises the stride-8 map of stage 3
(`dsn`: 3x3 conv + ABN, dropout, classifier; loss weight 0.4): `oc_dsn_head` below.

Names follow the official modules (`stages_0/f_key`, `f_value`, `W`, `conv_bn_dropout`,
`up_dr`, `conv2`..`conv5`); `context_conv` is the official `context.0/1` (`layer5` in the
pyramid network), `conv_seg` its `cls`.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers, segmentor
from segjax.models.heads import base
from segjax.models.layers import resize_align_corners
from segjax.models.registry import HEADS, MODELS

OC_TYPES = ("base", "pyramid", "asp")


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
  """InPlaceABNSync's activation (leaky ReLU, slope 0.01)."""
  return jax.nn.leaky_relu(x, negative_slope=0.01)


class ConvABN(nn.Module):
  """Conv (`conv`, with or without bias as the official layer) then InPlaceABNSync (`bn`):
  BatchNorm and a leaky ReLU, or BatchNorm alone with `act=False` (the official
  `BatchNorm2d = InPlaceABNSync(activation='none')`)."""
  features: int
  kernel_size: int = 1
  dilation: int = 1
  use_bias: bool = True
  act: bool = True
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    p = self.dilation * (self.kernel_size // 2)
    x = layers.Conv(self.features, (self.kernel_size,) * 2, padding=((p, p), (p, p)),
                kernel_dilation=self.dilation, use_bias=self.use_bias, dtype=self.dtype,
                name="conv")(x)
    x = layers.batch_norm(train, self.dtype, "bn")(x)
    return leaky_relu(x) if self.act else x


def _attend(query: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
  """softmax(q q^T / sqrt(d)) v over the positions of (B, H, W, .) maps: the official
  f_query *is* f_key (one module), so queries and keys are the same tensor."""
  b, h, w, d = query.shape
  q = query.reshape(b, h * w, d)
  sim = jnp.einsum("bqd,bkd->bqk", q, q) * d ** -0.5
  sim = jax.nn.softmax(sim.astype(jnp.float32), axis=-1).astype(value.dtype)
  v = value.reshape(b, h * w, value.shape[-1])
  return jnp.einsum("bqk,bkc->bqc", sim, v).reshape(b, h, w, value.shape[-1])


class SelfAttention(nn.Module):
  """The official _SelfAttentionBlock (`downsample` > 1: on a max-pooled map, its `scale`)
  and _PyramidSelfAttentionBlock (`partitions` > 1: attention inside each cell of a
  partitions x partitions grid, the last row / column of cells taking the remainder).
  Returns the object context `W(softmax(k k^T) v)`, out_channels wide, at the input size."""
  key_channels: int
  value_channels: int
  out_channels: int
  downsample: int = 1
  partitions: int = 1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    h, w = x.shape[1:3]
    if self.downsample > 1:
      s = self.downsample
      x = nn.max_pool(x, (s, s), strides=(s, s), padding="VALID")
    key = ConvABN(self.key_channels, dtype=self.dtype, name="f_key")(x, train)
    value = layers.Conv(self.value_channels, (1, 1), dtype=self.dtype, name="f_value")(x)
    n = self.partitions
    if n == 1:
      context = _attend(key, value)
    else:  # the official cells: n per side, the last one taking the remainder (maybe all)
      def cells(size):
        step = size // n
        spans = [(i * step, size if i == n - 1 else (i + 1) * step) for i in range(n)]
        return [(a, b) for a, b in spans if b > a]
      context = jnp.concatenate([
          jnp.concatenate([_attend(key[:, r0:r1, c0:c1], value[:, r0:r1, c0:c1])
                           for c0, c1 in cells(x.shape[2])], axis=2)
          for r0, r1 in cells(x.shape[1])], axis=1)
    context = layers.Conv(self.out_channels, (1, 1), kernel_init=nn.initializers.zeros,
                      dtype=self.dtype, name="W")(context)
    if self.downsample > 1:
      context = resize_align_corners(context, (h, w))
    return context


class OCHead(nn.Module):
  num_classes: int
  oc_type: str = "base"  # base | pyramid | asp
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)  # pyramid: the partition grids
  dilations: Sequence[int] = (12, 24, 36)  # asp: the atrous branches
  dropout: float = 0.05  # the official base / pyramid networks; 0.1 in the asp one
  dtype: Optional[Any] = None

  def __post_init__(self):
    if self.oc_type not in OC_TYPES:
      raise ConfigError(f"model.decode_head.oc_type must be one of {OC_TYPES}, "
                        f"got {self.oc_type!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    c, dt = self.channels, self.dtype
    # pyramid's `layer5` is conv + BN without activation; base / asp's `context.0/1` an ABN.
    x = ConvABN(c, 3, act=self.oc_type != "pyramid", dtype=dt, name="context_conv")(x, train)
    if self.oc_type == "base":  # BaseOC_Module, sizes [1]
      context = SelfAttention(c // 2, c // 2, c, dtype=dt, name="stages_0")(x, train)
      x = jnp.concatenate([context, x], axis=-1)
    elif self.oc_type == "pyramid":  # Pyramid_OC_Module
      contexts = [SelfAttention(c // 2, c, c, partitions=s, dtype=dt,
                                name=f"stages_{i}")(x, train)
                  for i, s in enumerate(self.pool_scales)]
      up = ConvABN(c * len(self.pool_scales), dtype=dt, name="up_dr")(x, train)
      x = jnp.concatenate([up] + contexts, axis=-1)
    else:  # ASP_OC_Module(c, c // 2)
      x = self.asp_branches(x, train)
    x = ConvABN(c, use_bias=self.oc_type != "asp", dtype=dt, name="conv_bn_dropout")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, dt)

  def asp_branches(self, x, train):
    inner, dt = self.channels // 2, self.dtype
    # The object-context branch: context conv, then BaseOC_Context_Module (scale 2).
    y = ConvABN(inner, 3, dtype=dt, name="context")(x, train)
    y = SelfAttention(inner // 2, inner, inner, downsample=2, dtype=dt, name="stages_0")(y, train)
    outs = [ConvABN(inner, dtype=dt, name="context_out")(y, train),
            ConvABN(inner, use_bias=False, dtype=dt, name="conv2")(x, train)]
    for i, d in enumerate(self.dilations):
      outs.append(ConvABN(inner, 3, d, use_bias=False, dtype=dt, name=f"conv{i + 3}")(x, train))
    return jnp.concatenate(outs, axis=-1)


class OCDSNHead(nn.Module):
  """OCNet's deep supervision (`dsn`) on stage 3: 3x3 conv (with bias) + ABN (BatchNorm alone
  in the pyramid network), dropout, classifier. mmseg's fcn_head differs (no conv bias,
  ReLU), hence this head."""
  num_classes: int
  in_index: base.Index = 2
  input_transform: Optional[str] = None
  channels: int = 512
  act: bool = True
  dropout: float = 0.05
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    x = ConvABN(self.channels, 3, act=self.act, dtype=self.dtype, name="conv")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("oc_head", OCHead)
HEADS.register("oc_dsn_head", OCDSNHead)
MODELS.register("ocnet", segmentor.encoder_decoder_with("oc_head"))
