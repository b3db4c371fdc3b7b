"""PoolFormer (Yu et al., "MetaFormer is Actually What You Need for Vision", CVPR 2022), as HF
transformers' PoolFormerModel, with the per-output norms of the paper's dense-prediction
backbone (github.com/sail-sg/poolformer models/poolformer.py `fork_feat`, mmpretrain's
PoolFormer with out_indices (0, 2, 4, 6), which mmseg's Semantic FPN configs use).

A MetaFormer whose token mixer is a parameter-free pooling: every block is

    x = x + layer_scale_1 * (avgpool3x3(GN(x)) - GN(x))     pooling, count_include_pad=False
    x = x + layer_scale_2 * MLP(GN(x))                      1x1 conv -> GELU -> 1x1 conv

with GroupNorm of one group (a LayerNorm over C, H and W). Four stages at strides 4/8/16/32,
each entered through a padded strided conv (7x7/4 pad 2, then 3x3/2 pad 1, no norm):

    image -> embed 7/4 -> blocks -> norm0 -> F1      (mmpretrain's network[0], its norm0)
          -> embed 3/2 -> blocks -> norm2 -> F2      (network[2], norm2)
          -> embed 3/2 -> blocks -> norm4 -> F3
          -> embed 3/2 -> blocks -> norm6 -> F4

`out_norms=False` returns the raw stage outputs, HF's hidden states. The MLP's 1x1 convs are
computed as layers.Dense over channels (the same maths; the converter squeezes their kernels).
Names mirror PoolFormerModel's state dict (`encoder/patch_embeddings_{i}/projection`,
`encoder/block_{i}_{j}/{before_norm,after_norm,output/conv1,layer_scale_1,...}`) and the
official / mmpretrain out norms `norm0`, `norm2`, `norm4`, `norm6`.
"""
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any


def group_norm(eps: float, dtype, name: str) -> nn.GroupNorm:
  """GroupNorm with one group, PyTorch's default eps; two-pass variance (the residual stream
  of a deep PoolFormer has a large mean, where E[x^2] - E[x]^2 loses digits)."""
  return nn.GroupNorm(num_groups=1, epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


class PoolFormerEmbeddings(nn.Module):
  """Patch embedding / downsampling: one padded strided conv (HF's `projection`)."""
  hidden_size: int
  patch_size: int
  stride: int
  padding: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    p = self.padding
    return layers.Conv(self.hidden_size, (self.patch_size,) * 2, strides=self.stride,
                   padding=((p, p), (p, p)), dtype=self.dtype, name="projection")(x)


class PoolFormerOutput(nn.Module):
  """The channel MLP: 1x1 conv -> GELU -> 1x1 conv (per-pixel linear layers)."""
  hidden: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.gelu(layers.Dense(self.hidden, dtype=self.dtype, name="conv1")(x), approximate=False)
    return layers.Dense(c, dtype=self.dtype, name="conv2")(x)


class PoolFormerLayer(nn.Module):
  pool_size: int
  mlp_ratio: float
  drop_path: float
  use_layer_scale: bool
  layer_scale_init_value: float
  eps: float
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    drop = layers.DropPath(self.drop_path)

    def scaled(y, name):
      if not self.use_layer_scale:
        return y
      scale = self.param(name, nn.initializers.constant(self.layer_scale_init_value), (c,),
                         jnp.float32)
      return y * scale.astype(y.dtype)

    y = group_norm(self.eps, self.dtype, "before_norm")(x)
    p = self.pool_size // 2
    # The token mixer: a 3x3 mean over the in-image neighbours only, minus the input.
    y = nn.avg_pool(y, (self.pool_size,) * 2, strides=(1, 1), padding=((p, p), (p, p)),
                    count_include_pad=False) - y
    x = x + drop(scaled(y, "layer_scale_1"), deterministic=not train)
    y = group_norm(self.eps, self.dtype, "after_norm")(x)
    y = PoolFormerOutput(int(c * self.mlp_ratio), dtype=self.dtype, name="output")(y)
    return x + drop(scaled(y, "layer_scale_2"), deterministic=not train)


class PoolFormerEncoder(nn.Module):
  """HF's PoolFormerEncoder: patch_embeddings_{i} and block_{i}_{j}; the raw stage outputs."""
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  patch_sizes: Sequence[int]
  strides: Sequence[int]
  padding: Sequence[int]
  pool_size: int
  mlp_ratio: float
  drop_path_rate: float
  use_layer_scale: bool
  layer_scale_init_value: float
  eps: float
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    features, block = [], 0
    for i, depth in enumerate(self.depths):
      x = PoolFormerEmbeddings(self.hidden_sizes[i], self.patch_sizes[i], self.strides[i],
                               self.padding[i], dtype=self.dtype,
                               name=f"patch_embeddings_{i}")(x)
      for j in range(depth):
        x = PoolFormerLayer(self.pool_size, self.mlp_ratio, rates[block], self.use_layer_scale,
                            self.layer_scale_init_value, self.eps, dtype=self.dtype,
                            name=f"block_{i}_{j}")(x, train)
        block += 1
      features.append(x)
    return features


class PoolFormer(nn.Module):
  """PoolFormer backbone; per-stage fields are 4-tuples (see POOLFORMER_VARIANTS)."""
  hidden_sizes: Sequence[int] = (64, 128, 320, 512)
  depths: Sequence[int] = (2, 2, 6, 2)
  patch_sizes: Sequence[int] = (7, 3, 3, 3)
  strides: Sequence[int] = (4, 2, 2, 2)
  padding: Sequence[int] = (2, 1, 1, 1)
  pool_size: int = 3
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0  # the official and mmseg Semantic FPN configs' value
  use_layer_scale: bool = True
  layer_scale_init_value: float = 1e-5
  norm_eps: float = 1e-5
  out_norms: bool = True  # GroupNorm on each returned map (norm0/2/4/6), as mmseg's recipe
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = len(self.depths)
    for key in ("hidden_sizes", "patch_sizes", "strides", "padding"):
      if len(getattr(self, key)) != n:
        raise ConfigError(f"model.backbone.{key} needs one entry per stage ({n})")
    features = PoolFormerEncoder(self.hidden_sizes, self.depths, self.patch_sizes, self.strides,
                                 self.padding, self.pool_size, self.mlp_ratio,
                                 self.drop_path_rate, self.use_layer_scale,
                                 self.layer_scale_init_value, self.norm_eps, dtype=self.dtype,
                                 name="encoder")(x, train)
    if not self.out_norms:
      return features
    # mmpretrain numbers its outputs by position in `network` (stages and downsamplings).
    return [group_norm(self.norm_eps, self.dtype, f"norm{2 * i}")(f)
            for i, f in enumerate(features)]


# The paper's Table 1 variants (HF's sail/poolformer_*; official poolformer_*_feat). MLP ratio
# 4 throughout; the deeper models start their layer scales at 1e-6.
_S, _M = (64, 128, 320, 512), (96, 192, 384, 768)
POOLFORMER_VARIANTS = {
    "s12": dict(hidden_sizes=_S, depths=(2, 2, 6, 2), layer_scale_init_value=1e-5),
    "s24": dict(hidden_sizes=_S, depths=(4, 4, 12, 4), layer_scale_init_value=1e-5),
    "s36": dict(hidden_sizes=_S, depths=(6, 6, 18, 6), layer_scale_init_value=1e-6),
    "m36": dict(hidden_sizes=_M, depths=(6, 6, 18, 6), layer_scale_init_value=1e-6),
    "m48": dict(hidden_sizes=_M, depths=(8, 8, 24, 8), layer_scale_init_value=1e-6),
}

BACKBONES.register("poolformer", PoolFormer)
for _name, _kw in POOLFORMER_VARIANTS.items():
  BACKBONES.register(f"poolformer_{_name}", functools.partial(PoolFormer, **_kw))
