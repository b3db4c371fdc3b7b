"""Plain Vision Transformer encoder (Dosovitskiy et al., "An Image is Worth 16x16 Words",
ICLR 2021), as mmseg 1.2.2's `VisionTransformer`: the backbone of SETR and Segmenter.

    image -> p x p patches (a stride-p conv) -> [cls] + tokens + position embedding
          -> L x (x + MHA(LN(x)); x + FFN(LN(x))) -> (optional final LN)
          -> the patch tokens of the layers in `out_indices`, as NHWC maps at 1/p

One resolution throughout: every returned map is at 1/patch_size of the (padded) input.
Inputs of any size work, as in mmseg:
  * a side that is not a multiple of the patch is zero-padded at the bottom/right first
    (`patch_pad="corner"`, mmseg's AdaptivePadding; "same" pads both sides; an int n pads n
    on every side and lets the conv drop the remainder, 0 being HF's and big_vision's VALID);
  * the position embedding, learnt for the `img_size // patch_size` grid, is resized to the
    token grid (`interpolate_mode` "bicubic": layers.resize_bicubic, torch-exact; or
    "bilinear", SETR's) whenever the *number* of tokens differs, exactly mmseg's condition
    (a grid of the same count but another shape is used as is, as mmseg does).

Module names mirror mmseg's state dict, so `--format=mmseg` converts by name:
`patch_embed/projection`, `cls_token`, `pos_embed`, `layers_{i}/{ln1, attn/attn, ln2, ffn}`,
final `ln1`. The attention is torch's nn.MultiheadAttention: its packed q|k|v projection
`in_proj_weight` (3D, D) is kept packed here as one Dense `attn/attn/in_proj` (one matmul;
the converter only renames `in_proj_weight` -> `in_proj.weight`); HF's and big_vision's
separate q, k, v are concatenated by their converters. As in mmseg (unlike timm), stochastic
depth drops only the FFN branch; `drop_rate` is mmseg's dropout after the position
embedding, the attention output and both FFN layers. Attention dropout is not supported
(every mmseg config uses 0).
"""
import functools
import re
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any
IntOrPair = Union[int, Sequence[int]]


def _pair(v: IntOrPair) -> Tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def patch_padding(h: int, w: int, patch: int, mode: Union[str, int]):
  """((top, bottom), (left, right)) zero padding of an h x w input before the patch conv."""
  if isinstance(mode, str):
    ph, pw = -h % patch, -w % patch  # AdaptivePadding with kernel = stride = patch
    if mode == "corner":
      return (0, ph), (0, pw)
    if mode == "same":
      return (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)
    raise ConfigError(f"model.backbone.patch_pad must be 'corner', 'same' or an int, got "
                      f"{mode!r}")
  return (int(mode), int(mode)), (int(mode), int(mode))


class PatchEmbed(nn.Module):
  """mmseg's PatchEmbed: pad (see patch_padding), then a p x p conv with stride p."""
  embed_dims: int
  patch_size: int
  padding: Union[str, int] = "corner"
  use_bias: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    pad = patch_padding(x.shape[1], x.shape[2], self.patch_size, self.padding)
    x = jnp.pad(x, ((0, 0), *pad, (0, 0)))
    return layers.Conv(self.embed_dims, (self.patch_size,) * 2, strides=self.patch_size,
                   padding="VALID", use_bias=self.use_bias, dtype=self.dtype,
                   name="projection")(x)


class MultiheadAttention(nn.Module):
  """torch's nn.MultiheadAttention (self-attention, batch first): packed q|k|v projection
  `in_proj` (D -> 3D), heads split as contiguous slices, output projection `out_proj`.
  `use_bias` is torch's `bias`: it covers both projections."""
  num_heads: int
  use_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, n, c = x.shape
    if c % self.num_heads:
      raise ConfigError(f"embed_dims {c} is not a multiple of num_heads {self.num_heads}")
    qkv = layers.Dense(3 * c, use_bias=self.use_bias, dtype=self.dtype, name="in_proj")(x)
    q, k, v = jnp.split(qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads), 3, axis=2)
    out = layers.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0]).reshape(b, n, c)
    return layers.Dense(c, use_bias=self.use_bias, dtype=self.dtype, name="out_proj")(out)


class MMCVAttention(nn.Module):
  """mmcv's MultiheadAttention wrapper: torch's attention (named `attn`, as in mmseg's
  state dict) followed by its `proj_drop`."""
  num_heads: int
  drop_rate: float = 0.0
  qkv_bias: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = MultiheadAttention(self.num_heads, self.qkv_bias, self.dtype, name="attn")(x)
    return nn.Dropout(self.drop_rate)(x, deterministic=not train)


class FFN(nn.Module):
  """mmcv's FFN with two layers: Linear `layers_0_0` -> GELU -> dropout -> Linear `layers_1`
  -> dropout. GELU is exact (torch's nn.GELU) unless `approximate_gelu` (the tanh form
  of flax's nn.gelu, which big_vision's ViTs were trained with)."""
  hidden: int
  drop_rate: float = 0.0
  approximate_gelu: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    x = layers.Dense(self.hidden, dtype=self.dtype, name="layers_0_0")(x)
    x = nn.gelu(x, approximate=self.approximate_gelu)
    x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
    x = layers.Dense(c, dtype=self.dtype, name="layers_1")(x)
    return nn.Dropout(self.drop_rate)(x, deterministic=not train)


class TransformerEncoderLayer(nn.Module):
  """mmseg's pre-norm ViT block on (batch, tokens, D) arrays; also Segmenter's decoder block.
  Stochastic depth (`drop_path`) on the FFN branch only, as mmseg."""
  num_heads: int
  mlp_ratio: float = 4
  drop_rate: float = 0.0
  drop_path: float = 0.0
  qkv_bias: bool = True
  eps: float = 1e-6
  approximate_gelu: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
    x = x + MMCVAttention(self.num_heads, self.drop_rate, self.qkv_bias, self.dtype,
                          name="attn")(norm(name="ln1")(x), train)
    y = FFN(int(self.mlp_ratio * c), self.drop_rate, self.approximate_gelu, self.dtype,
            name="ffn")(norm(name="ln2")(x), train)
    return x + layers.DropPath(self.drop_path)(y, deterministic=not train)


def resize_pos_embed(pos_embed, grid: Tuple[int, int], pos_grid: Tuple[int, int], mode: str):
  """mmseg's VisionTransformer.resize_pos_embed: the (1, 1 + gh*gw, D) embedding's grid part
  resized from `pos_grid` to `grid` (`mode` "bicubic" or "bilinear", align_corners=False);
  the cls entry is kept. Works on numpy or jax arrays (converters use it too)."""
  ph, pw = pos_grid
  c = pos_embed.shape[-1]
  cls, table = pos_embed[:, :1], pos_embed[:, -ph * pw:].reshape(1, ph, pw, c)
  if mode == "bicubic":
    table = layers.resize_bicubic(jnp.asarray(table), grid)
  elif mode == "bilinear":
    table = layers.resize_bilinear(jnp.asarray(table), grid)
  else:
    raise ConfigError(f"model.backbone.interpolate_mode must be 'bicubic' or 'bilinear', got "
                      f"{mode!r}")
  return jnp.concatenate([jnp.asarray(cls), table.reshape(1, -1, c)], axis=1)


class VisionTransformer(nn.Module):
  """ViT encoder (see the module docstring). Returns one NHWC map per entry of out_indices.

  out_indices: layer indices (0-based) whose tokens are returned, or -1 for the last layer
    (mmseg's default). None (segjax's default, so every registered backbone gives the four
    maps that generic heads expect) takes the last layer of each quarter, e.g. (2, 5, 8, 11).
  img_size: the (h, w) the position embedding is learnt for (mmseg's img_size); it fixes
    the parameter shape: (h // patch_size) * (w // patch_size) + 1 entries.
  layer_norm_eps: mmseg's configs and big_vision use 1e-6, HF's ViT 1e-12.
  patch_bias: mmseg's default has no bias in the patch conv; HF and big_vision have one.
  """
  img_size: IntOrPair = 224
  patch_size: int = 16
  patch_pad: Union[str, int] = "corner"
  patch_bias: bool = False
  embed_dims: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4
  out_indices: Optional[Union[int, Sequence[int]]] = None
  qkv_bias: bool = True
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  with_cls_token: bool = True
  final_norm: bool = False
  interpolate_mode: str = "bicubic"
  layer_norm_eps: float = 1e-6
  approximate_gelu: bool = False
  # train.remat: "none" | "block" | "full", each block recomputed in the backward pass
  # (layers.REMAT_POLICIES); set by segjax.models.build_model from config.train.remat.
  remat: str = "none"
  dtype: Optional[Dtype] = None

  def pos_grid(self) -> Tuple[int, int]:
    """The (h, w) token grid the position embedding is learnt for."""
    return tuple(s // self.patch_size for s in _pair(self.img_size))

  def output_layers(self) -> Tuple[int, ...]:
    n = self.num_layers
    if self.out_indices is None:
      return tuple(sorted({max(n * (q + 1) // 4 - 1, 0) for q in range(4)}))
    idx = self.out_indices
    idx = (n - 1 if idx == -1 else idx,) if isinstance(idx, (int, np.integer)) else tuple(idx)
    if not idx or any(not 0 <= int(i) < n for i in idx):
      raise ConfigError(f"model.backbone.out_indices must be -1 or layer indices in "
                        f"[0, {n}), got {self.out_indices}")
    return tuple(int(i) for i in idx)

  @nn.compact
  def __call__(self, x, train: bool = False):
    b = x.shape[0]
    c = self.embed_dims
    out_layers = self.output_layers()
    x = PatchEmbed(c, self.patch_size, self.patch_pad, self.patch_bias, self.dtype,
                   name="patch_embed")(x)
    h, w = x.shape[1:3]
    x = x.reshape(b, h * w, c)
    init = nn.initializers.truncated_normal(0.02)
    pos_grid = self.pos_grid()
    cls_token = self.param("cls_token", init, (1, 1, c), jnp.float32)
    pos_embed = self.param("pos_embed", init, (1, pos_grid[0] * pos_grid[1] + 1, c),
                           jnp.float32)
    if h * w != pos_grid[0] * pos_grid[1]:  # mmseg resizes only when the count differs
      pos_embed = resize_pos_embed(pos_embed, (h, w), pos_grid, self.interpolate_mode)
    x = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, c)).astype(x.dtype), x], axis=1)
    x = nn.Dropout(self.drop_rate)(x + pos_embed.astype(x.dtype), deterministic=not train)
    if not self.with_cls_token:
      x = x[:, 1:]  # the cls token only carried its position embedding; drop it

    rates = np.linspace(0.0, self.drop_path_rate, self.num_layers).tolist()
    features = []
    for i in range(self.num_layers):
      x = layers.remat(TransformerEncoderLayer, self.remat)(
          self.num_heads, self.mlp_ratio, self.drop_rate, rates[i], self.qkv_bias,
          self.layer_norm_eps, self.approximate_gelu, self.dtype, name=f"layers_{i}")(x, train)
      if i == self.num_layers - 1 and self.final_norm:
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="ln1")(x)
      if i in out_layers:
        tokens = x[:, 1:] if self.with_cls_token else x
        features.append(tokens.reshape(b, h, w, c))
    return features

  def layer_id(self, path: str, num_layers: int, decay_type: str) -> int:
    """mmseg's get_layer_id_for_vit (layer-wise lr decay) on a "/"-joined parameter path
    relative to the backbone: embeddings 0, block i -> i + 1, the rest (final norm)
    num_layers + 1. mmseg has no stage-wise rule for ViTs."""
    if "layer_wise" not in decay_type:
      raise ConfigError(f"optim.layer_decay_type={decay_type!r}: a ViT backbone has "
                        "layer-wise ids only (mmseg's get_layer_id_for_vit)")
    top = path.split("/")[0]
    if top in ("cls_token", "mask_token", "pos_embed", "patch_embed"):
      return 0
    m = re.fullmatch(r"layers_(\d+)", top)
    if m:
      return int(m.group(1)) + 1
    return num_layers + 1


# (embed_dims, num_heads, num_layers) of the paper's / DeiT's sizes (patch 16).
VIT_VARIANTS = {
    "tiny": dict(embed_dims=192, num_heads=3, num_layers=12),
    "small": dict(embed_dims=384, num_heads=6, num_layers=12),
    "base": dict(embed_dims=768, num_heads=12, num_layers=12),
    "large": dict(embed_dims=1024, num_heads=16, num_layers=24),
}

BACKBONES.register("vit", VisionTransformer)
for _name, _kw in VIT_VARIANTS.items():
  BACKBONES.register(f"vit_{_name}", functools.partial(VisionTransformer, patch_size=16, **_kw))
