"""Mix Transformer (MiT) encoder of SegFormer (Xie et al., NeurIPS 2021).

Hierarchical: four stages at strides 4/8/16/32, each an overlapped patch embedding followed by
transformer blocks whose attention shrinks keys/values by a spatial-reduction ratio and whose
FFN mixes positions with a 3x3 depthwise conv (so no positional embedding is needed and any
input size works). Returns the four NHWC feature maps.

Parameter names follow the modules below; segjax.convert.hf_segformer maps HF names onto them.
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any


class OverlapPatchEmbed(nn.Module):
  """Strided conv whose kernel overlaps its neighbours (7x7/4, then 3x3/2), then LayerNorm."""
  features: int
  patch_size: int
  stride: int
  eps: float
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    p = self.patch_size // 2
    x = layers.Conv(self.features, (self.patch_size,) * 2, strides=self.stride,
                padding=((p, p), (p, p)), dtype=self.dtype, name="proj")(x)
    return nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="norm")(x)


class EfficientSelfAttention(nn.Module):
  """Multi-head attention whose keys/values come from a map shrunk sr_ratio times per side.

  linear: PVT v2-Li's linear SRA (pvt_v2.py) instead: keys/values from the map average-pooled
  to a fixed 7x7 grid (PyTorch's AdaptiveAvgPool2d, so any map size), then 1x1 conv `sr`,
  LayerNorm `sr_norm` and GELU; sr_ratio is unused.
  """
  num_heads: int
  sr_ratio: int
  eps: float
  linear: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"hidden size {c} is not a multiple of num_heads {self.num_heads}")
    d = c // self.num_heads
    dense = functools.partial(layers.Dense, c, dtype=self.dtype)
    q = dense(name="query")(x).reshape(b, h * w, self.num_heads, d)
    kv = x
    if self.linear:
      kv = layers.adaptive_avg_pool(x, (7, 7))
      kv = layers.Conv(c, (1, 1), dtype=self.dtype, name="sr")(kv)
      kv = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="sr_norm")(kv)
      kv = nn.gelu(kv, approximate=False)
    elif self.sr_ratio > 1:
      kv = layers.Conv(c, (self.sr_ratio,) * 2, strides=self.sr_ratio, padding="VALID",
                   dtype=self.dtype, name="sr")(kv)
      kv = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="sr_norm")(kv)
    kv = kv.reshape(b, -1, c)
    k = dense(name="key")(kv).reshape(b, -1, self.num_heads, d)
    v = dense(name="value")(kv).reshape(b, -1, self.num_heads, d)
    out = layers.dot_product_attention(q, k, v).reshape(b, h, w, c)
    return dense(name="proj")(out)


class MixFFN(nn.Module):
  """Linear -> 3x3 depthwise conv -> GELU -> linear; the conv leaks position information.
  linear: PVT v2-Li's ReLU after the first linear layer."""
  hidden: int
  dwconv_impl: str = "auto"
  linear: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = layers.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    if self.linear:
      x = nn.relu(x)
    x = layers.DepthwiseConv(3, impl=self.dwconv_impl, dtype=self.dtype, name="dwconv")(x)
    x = nn.gelu(x, approximate=False)
    return layers.Dense(c, dtype=self.dtype, name="fc2")(x)


class MiTBlock(nn.Module):
  """x + attn(LN(x)), then x + MixFFN(LN(x)), with stochastic depth; `linear`: PVT v2-Li's
  block (linear SRA, ReLU FFN)."""
  num_heads: int
  sr_ratio: int
  mlp_ratio: int
  drop_path: float
  eps: float
  dwconv_impl: str = "auto"
  linear: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
    drop = layers.DropPath(self.drop_path)
    y = EfficientSelfAttention(self.num_heads, self.sr_ratio, self.eps, self.linear,
                               dtype=self.dtype, name="attn")(norm(name="norm1")(x))
    x = x + drop(y, deterministic=not train)
    y = MixFFN(int(c * self.mlp_ratio), self.dwconv_impl, self.linear, dtype=self.dtype,
               name="mlp")(norm(name="norm2")(x))
    return x + drop(y, deterministic=not train)


class MixTransformer(nn.Module):
  """MiT encoder. All per-stage fields are 4-tuples; see MIT_VARIANTS for B0..B5."""
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  num_heads: Sequence[int]
  sr_ratios: Sequence[int] = (8, 4, 2, 1)
  patch_sizes: Sequence[int] = (7, 3, 3, 3)
  strides: Sequence[int] = (4, 2, 2, 2)
  mlp_ratio: int = 4
  drop_path_rate: float = 0.1
  # The paper's implementation (mmseg) uses 1e-6; HF transformers' port uses 1e-5.
  layer_norm_eps: float = 1e-6
  dwconv_impl: str = "auto"
  # train.remat: "none" | "block" | "full", each block recomputed in the backward pass
  # (layers.REMAT_POLICIES); set by segjax.models.build_model from config.train.remat.
  remat: str = "none"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    block_cls = layers.remat(MiTBlock, self.remat)
    # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks.
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    features = []
    block = 0
    for s in range(len(self.depths)):
      x = OverlapPatchEmbed(self.hidden_sizes[s], self.patch_sizes[s], self.strides[s],
                            self.layer_norm_eps, dtype=self.dtype, name=f"patch_embed{s}")(x)
      for j in range(self.depths[s]):
        x = block_cls(self.num_heads[s], self.sr_ratios[s], self.mlp_ratio, rates[block],
                      self.layer_norm_eps, self.dwconv_impl, dtype=self.dtype,
                      name=f"block{s}_{j}")(x, train)
        block += 1
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=f"norm{s}")(x)
      features.append(x)
    return features


# Hyper-parameters of the paper's variants (Table 6 of the SegFormer paper).
MIT_VARIANTS = {
    "b0": dict(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(hidden_sizes=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}

BACKBONES.register("mit", MixTransformer)
for _name, _kw in MIT_VARIANTS.items():
  BACKBONES.register(f"mit_{_name}",
                     functools.partial(MixTransformer, num_heads=(1, 2, 5, 8), **_kw))
