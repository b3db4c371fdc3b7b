"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", ICCV 2021), the backbone of its UperNet segmentation models.

    image -- patch embed 4x4 + LN ----------------------------------------------> 1/4
      stage i: [ W-MSA block, SW-MSA block ] x depth_i --> out norm --> feature i
               `-- patch merging (2x2 neighbours concatenated, LN, linear 4C -> 2C) --> next stage

A block is x + MSA(LN(x)) then x + MLP(LN(x)); attention runs inside non-overlapping
window_size x window_size windows, with a learnt relative position bias per head. Every
second block shifts the map by window_size // 2 first (a cyclic roll), so windows straddle
the previous block's borders; the -100 mask keeps tokens that the roll brought together from
attending to each other.

Any input size works exactly as in HF's SwinBackbone and mmseg's SwinTransformer (which
agree): the image is zero-padded at the bottom/right to a multiple of the patch size, every
block pads its normed map to a multiple of the window (and crops back), and patch merging
pads odd maps by one row/column. Windows never shrink on small maps (HF's SwinModel does
that for classification; its backbone does not).

Parameter names are HF transformers' SwinBackbone module tree (`embeddings/patch_embeddings/
projection`, `encoder/layers_0/blocks_1/attention/self/query`, `hidden_states_norms/stage1`),
so HF checkpoints convert by name (segjax.convert.hf_swin, which also maps mmseg's names).
"""
import functools
from typing import Any, List, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any


def relative_position_index(window_size: int) -> np.ndarray:
  """(N, N) index into the (2w-1)^2-row bias table of the offset between window tokens
  a and b (N = w*w, row-major): (dy + w-1) * (2w-1) + (dx + w-1)."""
  coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size),
                                indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)
  return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(height: int, width: int, window_size: int, shift: int) -> np.ndarray:
  """(num_windows, N, N) additive mask of a map rolled by -shift: 0 between tokens that
  were neighbours before the roll, -100 between tokens the roll wrapped together."""
  region = np.zeros((height, width), np.float32)
  cuts = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
  for i, hs in enumerate(cuts):
    for j, ws in enumerate(cuts):
      region[hs, ws] = 3 * i + j
  windows = region.reshape(height // window_size, window_size, width // window_size,
                           window_size).transpose(0, 2, 1, 3).reshape(-1, window_size ** 2)
  diff = windows[:, None, :] - windows[:, :, None]
  return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


class SwinSelfAttention(nn.Module):
  """Multi-head attention inside each window, with the relative position bias (and the
  shifted-window mask). Input and output: the padded, rolled (B, Hp, Wp, C) map.

  The windows are folded into the heads axis of layers.dot_product_attention, i.e. a map is
  one (B, N, windows * heads, d) sequence, so bias + mask is one (1, windows * heads, N, N)
  array shared by the batch rather than a copy per image."""
  num_heads: int
  window_size: int
  shift: int
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, hp, wp, c = x.shape
    ws, heads = self.window_size, self.num_heads
    if c % heads:
      raise ValueError(f"hidden size {c} is not a multiple of num_heads {heads}")
    n, nh, nw = ws * ws, hp // ws, wp // ws
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * ws - 1) ** 2, heads), jnp.float32)
    bias = table[relative_position_index(ws).reshape(-1)].reshape(n, n, heads)
    bias = jnp.transpose(bias, (2, 0, 1))[None]  # (1, heads, N, N)
    if self.shift:
      bias = bias + shifted_window_mask(hp, wp, ws, self.shift)[:, None]
    bias = jnp.broadcast_to(bias, (nh * nw, heads, n, n)).reshape(1, nh * nw * heads, n, n)

    def windows(t):  # (B, Hp, Wp, C) -> (B, N, windows * heads, d), window-major
      t = t.reshape(b, nh, ws, nw, ws, c).transpose(0, 2, 4, 1, 3, 5)
      return t.reshape(b, n, nh * nw * heads, c // heads)

    dense = functools.partial(layers.Dense, c, use_bias=self.qkv_bias, dtype=self.dtype)
    q, k, v = (windows(dense(name=name)(x)) for name in ("query", "key", "value"))
    out = layers.dot_product_attention(q, k, v, bias=bias.astype(q.dtype))
    out = out.reshape(b, ws, ws, nh, nw, c).transpose(0, 3, 1, 4, 2, 5)
    return out.reshape(b, hp, wp, c)


class DenseUnit(nn.Module):
  """One linear layer named `dense` inside a named module: HF's one-layer wrappers
  (SwinSelfOutput, SwinIntermediate, SwinOutput), kept so names stay HF's."""
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    return layers.Dense(self.features, dtype=self.dtype, name="dense")(x)


class SwinAttention(nn.Module):
  """(Shifted-)window MSA on a (B, H, W, C) map: pad to the window multiple, roll, attend,
  roll back, crop, project."""
  num_heads: int
  window_size: int
  shift: int
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    _, h, w, c = x.shape
    ws, s = self.window_size, self.shift
    x = jnp.pad(x, ((0, 0), (0, -h % ws), (0, -w % ws), (0, 0)))
    if s:
      x = jnp.roll(x, (-s, -s), axis=(1, 2))
    x = SwinSelfAttention(self.num_heads, ws, s, self.qkv_bias, dtype=self.dtype,
                          name="self")(x)
    if s:
      x = jnp.roll(x, (s, s), axis=(1, 2))
    return DenseUnit(c, dtype=self.dtype, name="output")(x[:, :h, :w])


class SwinLayer(nn.Module):
  """One Swin block (HF's SwinLayer). Stochastic depth drops both residual branches, as in
  the paper's code and mmseg (HF's port drops only the attention branch)."""
  num_heads: int
  window_size: int
  shift: int
  mlp_ratio: float
  drop_path: float
  qkv_bias: bool = True
  eps: float = 1e-5
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
    drop = layers.DropPath(self.drop_path)
    y = SwinAttention(self.num_heads, self.window_size, self.shift, self.qkv_bias,
                      dtype=self.dtype, name="attention")(norm(name="layernorm_before")(x))
    x = x + drop(y, deterministic=not train)
    y = DenseUnit(int(c * self.mlp_ratio), dtype=self.dtype,
                  name="intermediate")(norm(name="layernorm_after")(x))
    y = DenseUnit(c, dtype=self.dtype, name="output")(nn.gelu(y, approximate=False))
    return x + drop(y, deterministic=not train)


class SwinPatchMerging(nn.Module):
  """2x2 neighbours concatenated in HF's order (top-left, bottom-left, top-right,
  bottom-right), LayerNorm, then a linear 4C -> 2C; odd maps gain a zero row/column."""
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    _, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                         x[:, 1::2, 1::2]], axis=-1)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    return layers.Dense(2 * c, use_bias=False, dtype=self.dtype, name="reduction")(x)


class SwinStage(nn.Module):
  """`depth` blocks alternating W-MSA and SW-MSA; returns (stage output, downsampled map)."""
  depth: int
  num_heads: int
  window_size: int
  mlp_ratio: float
  drop_paths: Sequence[float]
  downsample: bool
  qkv_bias: bool = True
  eps: float = 1e-5
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    for j in range(self.depth):
      shift = self.window_size // 2 if j % 2 else 0
      x = SwinLayer(self.num_heads, self.window_size, shift, self.mlp_ratio, self.drop_paths[j],
                    self.qkv_bias, self.eps, dtype=self.dtype, name=f"blocks_{j}")(x, train)
    down = SwinPatchMerging(dtype=self.dtype, name="downsample")(x) if self.downsample else None
    return x, down


class SwinEncoder(nn.Module):
  """The stages; returns each stage's map before its patch merging (strides 4..32)."""
  embed_dim: int
  depths: Sequence[int]
  num_heads: Sequence[int]
  window_size: int
  mlp_ratio: float
  drop_path_rate: float
  qkv_bias: bool = True
  eps: float = 1e-5
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool) -> List[jnp.ndarray]:
    # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks.
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    outs, first = [], 0
    for i, depth in enumerate(self.depths):
      out, x = SwinStage(depth, self.num_heads[i], self.window_size, self.mlp_ratio,
                         rates[first:first + depth], i < len(self.depths) - 1, self.qkv_bias,
                         self.eps, dtype=self.dtype, name=f"layers_{i}")(x, train)
      outs.append(out)
      first += depth
    return outs


class PatchEmbeddings(nn.Module):
  """Non-overlapping patch_size x patch_size patches, linearly embedded (a strided conv);
  the image is zero-padded at the bottom/right to a multiple of the patch size first."""
  embed_dim: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    x = jnp.pad(x, ((0, 0), (0, -x.shape[1] % p), (0, -x.shape[2] % p), (0, 0)))
    return layers.Conv(self.embed_dim, (p, p), strides=p, padding="VALID", dtype=self.dtype,
                   name="projection")(x)


class SwinEmbeddings(nn.Module):
  embed_dim: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    x = PatchEmbeddings(self.embed_dim, self.patch_size, dtype=self.dtype,
                        name="patch_embeddings")(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)


class OutNorms(nn.Module):
  """One LayerNorm per returned map, named `stage1`.. like HF backbones' hidden_states_norms
  (mmseg's `norm0`..)."""
  eps: float = 1e-5
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> List[jnp.ndarray]:
    return [nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name=f"stage{i + 1}")(x)
            for i, x in enumerate(features)]


class SwinTransformer(nn.Module):
  """Swin backbone: the four stage maps (strides 4, 8, 16, 32; embed_dim * 1, 2, 4, 8
  channels), each through its out norm unless `out_norms` is False (then the raw stage
  outputs, for heads that bring their own norms)."""
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  patch_size: int = 4
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  # The blocks' LayerNorms (HF's config.layer_norm_eps); embedding, patch-merging and out
  # norms use PyTorch's default 1e-5 in both references.
  layer_norm_eps: float = 1e-5
  out_norms: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> List[jnp.ndarray]:
    x = SwinEmbeddings(self.embed_dim, self.patch_size, dtype=self.dtype, name="embeddings")(x)
    outs = SwinEncoder(self.embed_dim, self.depths, self.num_heads, self.window_size,
                       self.mlp_ratio, self.drop_path_rate, self.qkv_bias, self.layer_norm_eps,
                       dtype=self.dtype, name="encoder")(x, train)
    if self.out_norms:
      outs = OutNorms(dtype=self.dtype, name="hidden_states_norms")(outs)
    return outs


# The paper's variants (Table 1 of the Swin paper; mmseg's / HF's configs).
SWIN_VARIANTS = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}

BACKBONES.register("swin", SwinTransformer)
for _name, _kw in SWIN_VARIANTS.items():
  BACKBONES.register(f"swin_{_name}", functools.partial(SwinTransformer, window_size=7, **_kw))
  # Window 12: the ImageNet-22k / 384x384-pretrained checkpoints (swin-base-patch4-window12).
  BACKBONES.register(f"swin_{_name}_w12",
                     functools.partial(SwinTransformer, window_size=12, **_kw))
