"""Pyramid Vision Transformer, PVT v1 (Wang et al., "Pyramid Vision Transformer: A Versatile
Backbone for Dense Prediction without Convolutions", ICCV 2021), as HF transformers' PvtModel.

Four stages, each a non-overlapping patch embedding (a strided conv + LayerNorm) plus a learnt
position embedding, then transformer blocks whose attention shrinks the keys/values by a
spatial-reduction conv (SRA, ratio 8/4/2/1), so that stride-4 maps stay affordable:

    image -> [patch embed /4 + pos] -> blocks -> F1 (1/4)
          -> [patch embed /2 + pos] -> blocks -> F2 (1/8)
          -> [patch embed /2 + pos] -> blocks -> F3 (1/16)
          -> [patch embed /2 + [cls] + pos] -> blocks -> LayerNorm -> F4 (1/32, cls dropped)

Returns the four NHWC maps. As in HF, the last stage carries a cls token that takes part in
its attention, and the encoder's final LayerNorm is applied to that stage (F1-F3 are the raw
block outputs). The official Semantic FPN backbone (github.com/whai362/PVT, segmentation/
pvt.py) differs in two details it inherits from neither: it has no cls token and no final
norm; HF checkpoints (and so segjax conversions) carry both.

Position embeddings are learnt for the `image_size` (224) grid of each stage and resized to the
actual token grid with bilinear interpolation, align_corners=False (PyTorch's default): the
official code's `_get_pos_embed`. HF's `interpolate_pos_encoding` reshapes the *learnt*
embedding to the *new* grid before interpolating, so HF's PvtModel fails for any input other
than `image_size` x `image_size`; at that size both are the identity.

Module names mirror PvtModel's state dict (`encoder/patch_embeddings_{i}`,
`encoder/block_{i}_{j}/attention/self/query`, ...), so segjax.convert.hf_pvt converts by
name. LayerNorm epsilon is HF's (1e-6 everywhere; the official code uses PyTorch's 1e-5 in the
patch embeddings and the reduction norm).
"""
import functools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any


def resize_position_embeddings(pos: jnp.ndarray, size: Tuple[int, int]) -> jnp.ndarray:
  """(1, n, C) embeddings of a square sqrt(n) x sqrt(n) grid -> (1, h*w, C) for an h x w grid,
  by bilinear interpolation with half-pixel centres (F.interpolate, align_corners=False)."""
  n, c = pos.shape[1], pos.shape[2]
  side = math.isqrt(n)
  if side * side != n:
    raise ConfigError(f"position embedding of {n} tokens is not a square grid")
  h, w = size
  if (side, side) == (h, w):
    return pos
  grid = layers.resize_bilinear(pos.reshape(1, side, side, c), (h, w))
  return grid.reshape(1, h * w, c)


class PvtPatchEmbeddings(nn.Module):
  """Strided conv + LayerNorm, then (+ cls token) + the resized position embedding.

  As in HF the conv's kernel is `stride` and its stride `patch_size` (equal in every PVT).
  `grid` is the side of the token grid at the pretraining size, which fixes the shape of
  the learnt position embedding."""
  hidden_size: int
  patch_size: int
  stride: int
  grid: int
  cls_token: bool
  eps: float
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    x = layers.Conv(self.hidden_size, (self.stride,) * 2, strides=self.patch_size, padding="VALID",
                dtype=self.dtype, name="projection")(x)
    b, h, w, c = x.shape
    x = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="layer_norm")(x.reshape(b, h * w, c))
    init = nn.initializers.truncated_normal(0.02)
    extra = int(self.cls_token)
    pos = self.param("position_embeddings", init, (1, self.grid ** 2 + extra, c), jnp.float32)
    pos_grid = resize_position_embeddings(pos[:, extra:], (h, w))
    if self.cls_token:
      cls = self.param("cls_token", init, (1, 1, c), jnp.float32).astype(x.dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c)), x], axis=1)
      pos_grid = jnp.concatenate([pos[:, :1], pos_grid], axis=1)
    return x + pos_grid.astype(x.dtype), (h, w)


class PvtEfficientSelfAttention(nn.Module):
  """Multi-head attention on (B, N, C) tokens whose keys/values come from the h x w map shrunk
  `sr_ratio` times per side by a strided conv (+ LayerNorm): SRA."""
  num_heads: int
  sr_ratio: int
  eps: float
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, hw: Tuple[int, int]):
    b, n, c = x.shape
    if c % self.num_heads:
      raise ConfigError(f"hidden size {c} is not a multiple of num_heads {self.num_heads}")
    d = c // self.num_heads
    dense = functools.partial(layers.Dense, c, use_bias=self.qkv_bias, dtype=self.dtype)
    q = dense(name="query")(x).reshape(b, n, self.num_heads, d)
    kv = x
    if self.sr_ratio > 1:
      if n != hw[0] * hw[1]:
        raise ConfigError("spatial reduction needs a stage without cls token (PVT's last "
                          "stage has sr_ratio 1)")
      kv = layers.Conv(c, (self.sr_ratio,) * 2, strides=self.sr_ratio, padding="VALID",
                   dtype=self.dtype, name="sequence_reduction")(x.reshape(b, *hw, c))
      kv = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="layer_norm")(
          kv.reshape(b, -1, c))
    k = dense(name="key")(kv).reshape(b, -1, self.num_heads, d)
    v = dense(name="value")(kv).reshape(b, -1, self.num_heads, d)
    return layers.dot_product_attention(q, k, v).reshape(b, n, c)


class DenseUnit(nn.Module):
  """One linear layer named `dense` inside a named module (HF's PvtSelfOutput)."""
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    return layers.Dense(self.features, dtype=self.dtype, name="dense")(x)


class PvtAttention(nn.Module):
  num_heads: int
  sr_ratio: int
  eps: float
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, hw):
    y = PvtEfficientSelfAttention(self.num_heads, self.sr_ratio, self.eps, self.qkv_bias,
                                  dtype=self.dtype, name="self")(x, hw)
    return DenseUnit(x.shape[-1], dtype=self.dtype, name="output")(y)


class PvtFFN(nn.Module):
  """Linear -> GELU -> linear (no depthwise conv: that is PVT v2's)."""
  hidden: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.gelu(layers.Dense(self.hidden, dtype=self.dtype, name="dense1")(x), approximate=False)
    return layers.Dense(c, dtype=self.dtype, name="dense2")(x)


class PvtLayer(nn.Module):
  """Pre-norm transformer block: x + SRA(LN(x)), then x + FFN(LN(x))."""
  num_heads: int
  sr_ratio: int
  mlp_ratio: float
  drop_path: float
  eps: float
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, hw, train: bool):
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
    drop = layers.DropPath(self.drop_path)
    y = PvtAttention(self.num_heads, self.sr_ratio, self.eps, self.qkv_bias, dtype=self.dtype,
                     name="attention")(norm(name="layer_norm_1")(x), hw)
    x = x + drop(y, deterministic=not train)
    y = PvtFFN(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(norm(name="layer_norm_2")(x))
    return x + drop(y, deterministic=not train)


class PvtEncoder(nn.Module):
  """HF's PvtEncoder: patch_embeddings_{i}, block_{i}_{j}, the final layer_norm."""
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  num_heads: Sequence[int]
  sr_ratios: Sequence[int]
  patch_sizes: Sequence[int]
  strides: Sequence[int]
  mlp_ratios: Sequence[float]
  image_size: int
  drop_path_rate: float
  eps: float
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    num_stages = len(self.depths)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    features, block = [], 0
    for i in range(num_stages):
      last = i == num_stages - 1
      # HF's grid: the stage's input side at image_size, over its patch size.
      side = self.image_size if i == 0 else self.image_size // 2 ** (i + 1)
      x, hw = PvtPatchEmbeddings(self.hidden_sizes[i], self.patch_sizes[i], self.strides[i],
                                 side // self.patch_sizes[i], last, self.eps, dtype=self.dtype,
                                 name=f"patch_embeddings_{i}")(x)
      for j in range(self.depths[i]):
        x = PvtLayer(self.num_heads[i], self.sr_ratios[i], self.mlp_ratios[i], rates[block],
                     self.eps, self.qkv_bias, dtype=self.dtype, name=f"block_{i}_{j}")(x, hw, train)
        block += 1
      if last:
        x = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="layer_norm")(x)[:, 1:]
      x = x.reshape(x.shape[0], *hw, x.shape[-1])
      features.append(x)
    return features


class PyramidVisionTransformer(nn.Module):
  """PVT v1 backbone; all per-stage fields are 4-tuples (see PVT_VARIANTS)."""
  hidden_sizes: Sequence[int] = (64, 128, 320, 512)
  depths: Sequence[int] = (2, 2, 2, 2)
  num_heads: Sequence[int] = (1, 2, 5, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  patch_sizes: Sequence[int] = (4, 2, 2, 2)
  strides: Sequence[int] = (4, 2, 2, 2)
  mlp_ratios: Sequence[float] = (8, 8, 4, 4)
  image_size: int = 224  # the pretraining size: fixes the learnt position-embedding grids
  drop_path_rate: float = 0.1  # the official Semantic FPN backbones' value
  layer_norm_eps: float = 1e-6
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = len(self.depths)
    for key in ("hidden_sizes", "num_heads", "sr_ratios", "patch_sizes", "strides",
                "mlp_ratios"):
      if len(getattr(self, key)) != n:
        raise ConfigError(f"model.backbone.{key} needs one entry per stage ({n})")
    return PvtEncoder(self.hidden_sizes, self.depths, self.num_heads, self.sr_ratios,
                      self.patch_sizes, self.strides, self.mlp_ratios, self.image_size,
                      self.drop_path_rate, self.layer_norm_eps, self.qkv_bias,
                      dtype=self.dtype, name="encoder")(x, train)


# The paper's Table 1 variants (HF's Xrenya/pvt-{tiny,small,medium,large}-224): widths
# 64/128/320/512, heads 1/2/5/8, MLP ratios 8/8/4/4, SR ratios 8/4/2/1; only depths differ.
PVT_VARIANTS = {
    "tiny": (2, 2, 2, 2),
    "small": (3, 4, 6, 3),
    "medium": (3, 4, 18, 3),
    "large": (3, 8, 27, 3),
}

BACKBONES.register("pvt", PyramidVisionTransformer)
for _name, _depths in PVT_VARIANTS.items():
  BACKBONES.register(f"pvt_{_name}", functools.partial(PyramidVisionTransformer, depths=_depths))
