"""PVT v2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer",
Computational Visual Media 2022), as HF transformers' PvtV2Model.

PVT v1 with its three changes: overlapping patch embeddings (7x7/4, then 3x3/2, padded),
no position embeddings but a 3x3 depthwise conv inside the FFN, and, in the "linear" variant
(B2-Li), linear SRA: keys/values from a fixed 7x7 adaptive average pool (+ 1x1 conv, LayerNorm,
GELU) instead of the strided reduction conv, and a ReLU after the FFN's first layer.

    image -> [overlap embed 7/4] -> blocks -> LN -> F1 (1/4)
          -> [overlap embed 3/2] -> blocks -> LN -> F2 (1/8)
          -> [overlap embed 3/2] -> blocks -> LN -> F3 (1/16)
          -> [overlap embed 3/2] -> blocks -> LN -> F4 (1/32)

Returns the four NHWC maps (after each stage's LayerNorm, HF's hidden states and the official
Semantic FPN backbone's outputs). The non-linear block is exactly SegFormer's MiT block, so
mit.py's OverlapPatchEmbed and MiTBlock (attention `attn/{query,key,value,sr,sr_norm,proj}`,
FFN `mlp/{fc1,dwconv,fc2}`) are used as they are; the stage level carries HF's names
(`encoder/layers_{s}/{patch_embedding,blocks_{j},layer_norm}`), and segjax.convert.hf_pvt
maps HF's block-level names onto MiT's. LayerNorm epsilon is HF's 1e-6 everywhere (the
official code leaves PyTorch's 1e-5 in the patch embeddings and the reduction norm).
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones import mit
from segjax.models.registry import BACKBONES

Dtype = Any


class LinearSpatialReductionAttention(nn.Module):
  """Linear SRA: keys/values from the map average-pooled to a fixed pool_size x pool_size grid
  (PyTorch's AdaptiveAvgPool2d, so any map size), then 1x1 conv, LayerNorm and GELU. Names as
  mit.EfficientSelfAttention's."""
  num_heads: int
  eps: float
  pool_size: int = 7
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    if c % self.num_heads:
      raise ConfigError(f"hidden size {c} is not a multiple of num_heads {self.num_heads}")
    d = c // self.num_heads
    dense = functools.partial(layers.Dense, c, dtype=self.dtype)
    q = dense(name="query")(x).reshape(b, h * w, self.num_heads, d)
    kv = layers.adaptive_avg_pool(x, (self.pool_size, self.pool_size))
    kv = nn.Conv(c, (1, 1), dtype=self.dtype, name="sr")(kv)
    kv = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="sr_norm")(kv.reshape(b, -1, c))
    kv = nn.gelu(kv, approximate=False)
    k = dense(name="key")(kv).reshape(b, -1, self.num_heads, d)
    v = dense(name="value")(kv).reshape(b, -1, self.num_heads, d)
    out = layers.dot_product_attention(q, k, v).reshape(b, h, w, c)
    return dense(name="proj")(out)


class LinearMixFFN(nn.Module):
  """mit.MixFFN with a ReLU after the first linear layer (the linear variant's FFN)."""
  hidden: int
  dwconv_impl: str = "shift"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.relu(layers.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    x = layers.DepthwiseConv(3, impl=self.dwconv_impl, dtype=self.dtype, name="dwconv")(x)
    x = nn.gelu(x, approximate=False)
    return layers.Dense(c, dtype=self.dtype, name="fc2")(x)


class LinearPvtV2Block(nn.Module):
  """mit.MiTBlock with linear SRA and the ReLU FFN (same names)."""
  num_heads: int
  mlp_ratio: int
  drop_path: float
  eps: float
  dwconv_impl: str = "shift"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
    drop = layers.DropPath(self.drop_path)
    y = LinearSpatialReductionAttention(self.num_heads, self.eps, dtype=self.dtype,
                                        name="attn")(norm(name="norm1")(x))
    x = x + drop(y, deterministic=not train)
    y = LinearMixFFN(int(c * self.mlp_ratio), self.dwconv_impl, dtype=self.dtype,
                     name="mlp")(norm(name="norm2")(x))
    return x + drop(y, deterministic=not train)


class PvtV2EncoderLayer(nn.Module):
  """One stage (HF's PvtV2EncoderLayer): overlapping patch embedding, blocks, LayerNorm."""
  hidden_size: int
  patch_size: int
  stride: int
  depth: int
  num_heads: int
  sr_ratio: int
  mlp_ratio: int
  drop_path_rates: Sequence[float]
  linear: bool
  eps: float
  dwconv_impl: str = "shift"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = mit.OverlapPatchEmbed(self.hidden_size, self.patch_size, self.stride, self.eps,
                              dtype=self.dtype, name="patch_embedding")(x)
    for j in range(self.depth):
      if self.linear:
        block = LinearPvtV2Block(self.num_heads, self.mlp_ratio, self.drop_path_rates[j],
                                 self.eps, self.dwconv_impl, dtype=self.dtype, name=f"blocks_{j}")
      else:
        block = mit.MiTBlock(self.num_heads, self.sr_ratio, self.mlp_ratio,
                             self.drop_path_rates[j], self.eps, self.dwconv_impl,
                             dtype=self.dtype, name=f"blocks_{j}")
      x = block(x, train)
    return nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="layer_norm")(x)


class PvtV2Encoder(nn.Module):
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  num_heads: Sequence[int]
  sr_ratios: Sequence[int]
  patch_sizes: Sequence[int]
  strides: Sequence[int]
  mlp_ratios: Sequence[int]
  drop_path_rate: float
  linear: bool
  eps: float
  dwconv_impl: str = "shift"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks.
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    features = []
    for s, depth in enumerate(self.depths):
      first = sum(self.depths[:s])
      x = PvtV2EncoderLayer(self.hidden_sizes[s], self.patch_sizes[s], self.strides[s], depth,
                            self.num_heads[s], self.sr_ratios[s], self.mlp_ratios[s],
                            tuple(rates[first:first + depth]), self.linear, self.eps,
                            self.dwconv_impl, dtype=self.dtype, name=f"layers_{s}")(x, train)
      features.append(x)
    return features


class PyramidVisionTransformerV2(nn.Module):
  """PVT v2 backbone; all per-stage fields are 4-tuples (see PVT_V2_VARIANTS)."""
  hidden_sizes: Sequence[int] = (32, 64, 160, 256)
  depths: Sequence[int] = (2, 2, 2, 2)
  num_heads: Sequence[int] = (1, 2, 5, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  patch_sizes: Sequence[int] = (7, 3, 3, 3)
  strides: Sequence[int] = (4, 2, 2, 2)
  mlp_ratios: Sequence[int] = (8, 8, 4, 4)
  linear_attention: bool = False
  drop_path_rate: float = 0.1  # the official Semantic FPN backbones' value
  layer_norm_eps: float = 1e-6
  dwconv_impl: str = "shift"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = len(self.depths)
    for key in ("hidden_sizes", "num_heads", "sr_ratios", "patch_sizes", "strides",
                "mlp_ratios"):
      if len(getattr(self, key)) != n:
        raise ConfigError(f"model.backbone.{key} needs one entry per stage ({n})")
    return PvtV2Encoder(self.hidden_sizes, self.depths, self.num_heads, self.sr_ratios,
                        self.patch_sizes, self.strides, self.mlp_ratios, self.drop_path_rate,
                        self.linear_attention, self.layer_norm_eps, self.dwconv_impl,
                        dtype=self.dtype, name="encoder")(x, train)


# The paper's Table 1 variants (HF's OpenGVLab/pvt_v2_b*; official pvt_v2.py). Heads 1/2/5/8
# and SR ratios 8/4/2/1 throughout.
_WIDE = (64, 128, 320, 512)
PVT_V2_VARIANTS = {
    "b0": dict(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(hidden_sizes=_WIDE, depths=(2, 2, 2, 2)),
    "b2": dict(hidden_sizes=_WIDE, depths=(3, 4, 6, 3)),
    "b2_linear": dict(hidden_sizes=_WIDE, depths=(3, 4, 6, 3), linear_attention=True),
    "b3": dict(hidden_sizes=_WIDE, depths=(3, 4, 18, 3)),
    "b4": dict(hidden_sizes=_WIDE, depths=(3, 8, 27, 3)),
    "b5": dict(hidden_sizes=_WIDE, depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}

BACKBONES.register("pvt_v2", PyramidVisionTransformerV2)
for _name, _kw in PVT_V2_VARIANTS.items():
  BACKBONES.register(f"pvt_v2_{_name}", functools.partial(PyramidVisionTransformerV2, **_kw))
