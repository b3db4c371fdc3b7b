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
Semantic FPN backbone's outputs). The block is exactly SegFormer's MiT block, so mit.py's
OverlapPatchEmbed and MiTBlock (attention `attn/{query,key,value,sr,sr_norm,proj}`, FFN
`mlp/{fc1,dwconv,fc2}`; its `linear` switch is the B2-Li block) are used as they are; the stage level carries HF's names
(`encoder/layers_{s}/{patch_embedding,blocks_{j},layer_norm}`), and segjax.convert.hf_pvt
maps HF's block-level names onto MiT's. LayerNorm epsilon is HF's 1e-6 everywhere (the
official code leaves PyTorch's 1e-5 in the patch embeddings and the reduction norm).
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import numpy as np

from segjax.errors import ConfigError
from segjax.models.backbones import mit
from segjax.models.registry import BACKBONES

Dtype = Any


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
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = mit.OverlapPatchEmbed(self.hidden_size, self.patch_size, self.stride, self.eps,
                              dtype=self.dtype, name="patch_embedding")(x)
    for j in range(self.depth):
      x = mit.MiTBlock(self.num_heads, self.sr_ratio, self.mlp_ratio, self.drop_path_rates[j],
                       self.eps, self.dwconv_impl, self.linear, dtype=self.dtype,
                       name=f"blocks_{j}")(x, train)
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
  dwconv_impl: str = "auto"
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
  dwconv_impl: str = "auto"
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
