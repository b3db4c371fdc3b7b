"""HRFormer (Yuan et al., NeurIPS 2021, "HRFormer: High-Resolution Transformer for Dense
Prediction"): HRNet's parallel multi-resolution streams and their repeated fusion, with the
residual blocks of stages 2-4 replaced by transformer blocks.

    stem (two 3x3/2 convs, 64 wide) -> stage 1 (Bottlenecks, stride 4)
    for stage 2, 3, 4:  transition (keep every stream, add one at half the resolution)
                        modules: per stream, blocks of
                            x = x + DropPath(LocalWindowAttention(LN(x)))
                            x = x + DropPath(FFN(LN(x)))  FFN = 1x1 -> 3x3 depthwise -> 1x1,
                                                          each with BN + GELU
                        then fusion: every stream sums all streams (lower ones by 1x1 conv +
                        BN and upsampling, higher ones by stride-2 3x3 depthwise + 1x1 convs)

The attention splits each map into non-overlapping w x w windows (w = 7) and attends within
a window only, with Swin's relative position bias; maps whose sides are not multiples of w are
zero-padded around the centre first (after the LayerNorm, unmasked: the padded tokens take
part as keys, as in the official code), so any input size works. The 3x3 depthwise conv of
the FFN is what carries information across window borders. Returns the four streams' maps
(strides 4, 8, 16, 32), highest resolution first, like segjax's HRNet, so HRNet's heads
(FCN, OCR with "resize_concat") sit on it unchanged.

Names follow the official code (github.com/HRNet/HRFormer, seg/lib/models/backbones/hrt/),
where they coincide with segjax's HRNet (mmseg-named: `conv1`, `layer1_0`,
`transition1_1_0_0`, `stage2_0/fuse_layers_0_1_0`) and inside the transformer blocks
(`stage2_0/branches_0_1/attn/attn/q_proj`, `.../relative_position_bias_table`,
`.../mlp/dw3x3`), so an official checkpoint converts by name (segjax/convert/hrformer.py).
Two things differ from HRNet: the fusion upsamples by nearest neighbour and then resizes to
the exact size with corners aligned, and downsamples with depthwise-separable convs.
"""
import functools
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.hrnet import _conv_bn, transition
from segjax.models.backbones.resnet import EXPANSION, Block
from segjax.models.layers import resize_align_corners
from segjax.models.registry import BACKBONES

Dtype = Any
LN_EPS = 1e-6  # the official norm_layer: partial(nn.LayerNorm, eps=1e-6)


def hrformer_extra(channels: Sequence[int], heads: Sequence[int], window_size: int = 7,
                   mlp_ratio: int = 4, num_modules: Sequence[int] = (1, 4, 2),
                   num_blocks: int = 2, stage1_blocks: int = 2,
                   stage1_channels: int = 64) -> dict:
  """The official stage spec (hrt_config.py, lower-cased like segjax's HRNet `extra`): stage
  1 is `stage1_blocks` Bottlenecks of `stage1_channels`, stage s (2..4) has num_modules[s-2]
  modules over the first s streams' `channels` / `heads`, `num_blocks` blocks per stream."""
  extra = {"stage1": {"num_modules": 1, "num_branches": 1, "block": "BOTTLENECK",
                      "num_blocks": (stage1_blocks,), "num_channels": (stage1_channels,)}}
  for s in (2, 3, 4):
    extra[f"stage{s}"] = {
        "num_modules": num_modules[s - 2], "num_branches": s, "block": "TRANSFORMER_BLOCK",
        "num_blocks": (num_blocks,) * s, "num_channels": tuple(channels[:s]),
        "num_heads": tuple(heads[:s]), "num_window_sizes": (window_size,) * s,
        "num_mlp_ratios": (mlp_ratio,) * s}
  return extra


# The paper's variants (official seg/lib/models/backbones/hrt/hrt_config.py).
HRFORMER_VARIANTS = {
    "small": hrformer_extra((32, 64, 128, 256), (1, 2, 4, 8)),
    "base": hrformer_extra((78, 156, 312, 624), (2, 4, 8, 16)),
}
STAGE_KEYS = ("num_blocks", "num_channels", "num_heads", "num_window_sizes", "num_mlp_ratios")


def relative_position_index(window: int) -> np.ndarray:
  """(w*w, w*w) index into the ((2w-1)^2, heads) bias table: token pairs at the same offset
  (dy, dx) share an entry, (dy + w - 1) * (2w - 1) + (dx + w - 1) (Swin's, the official
  MHA_'s)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
  coords = coords.reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
  return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowMHA(nn.Module):
  """Multi-head self-attention inside each window with a learned relative position bias
  (official MHA_). x: (windows, w*w, C)."""
  num_heads: int
  window_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, n, c = x.shape
    h, w = self.num_heads, self.window_size
    d = c // h
    dense = functools.partial(layers.Dense, c, dtype=self.dtype)
    q = dense(name="q_proj")(x).reshape(b, n, h, d)
    k = dense(name="k_proj")(x).reshape(b, n, h, d)
    v = dense(name="v_proj")(x).reshape(b, n, h, d)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * w - 1) ** 2, h), jnp.float32)
    bias = table[relative_position_index(w)].transpose(2, 0, 1)[None]  # (1, heads, n, n)
    out = layers.dot_product_attention(q, k, v, bias=bias.astype(q.dtype))
    return dense(name="out_proj")(out.reshape(b, n, c))


class LocalWindowAttention(nn.Module):
  """Centre-pad to whole windows, attend within each w x w window, crop back (official
  InterlacedPoolAttention with PadBlock and LocalPermuteModule). x: (B, H, W, C)."""
  num_heads: int
  window_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    b, h, wd, c = x.shape
    w = self.window_size
    ph, pw = -h % w, -wd % w
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    qh, qw = (h + ph) // w, (wd + pw) // w
    windows = x.reshape(b, qh, w, qw, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)
    out = WindowMHA(self.num_heads, w, dtype=self.dtype, name="attn")(windows)
    out = out.reshape(b, qh, qw, w, w, c).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, h + ph, wd + pw, c)
    return out[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + wd]


class MlpDWBN(nn.Module):
  """The FFN: 1x1 -> BN -> GELU -> 3x3 depthwise -> BN -> GELU -> 1x1 -> BN -> GELU (the
  official MlpDWBN; its 1x1 convs are per-token linear layers here)."""
  hidden: int
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    gelu = functools.partial(nn.gelu, approximate=False)
    bn = lambda name: layers.batch_norm(train, self.dtype, name)  # noqa: E731
    x = gelu(bn("norm1")(layers.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)))
    x = layers.DepthwiseConv(3, self.dwconv_impl, dtype=self.dtype, name="dw3x3")(x)
    x = gelu(bn("norm2")(x))
    return gelu(bn("norm3")(layers.Dense(c, dtype=self.dtype, name="fc2")(x)))


class TransformerBlock(nn.Module):
  """Pre-norm window attention and FFN, each residual with stochastic depth (the official
  GeneralTransformerBlock)."""
  num_heads: int
  window_size: int
  mlp_ratio: float
  drop_path: float
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool, bn_train: bool):
    norm = functools.partial(nn.LayerNorm, epsilon=LN_EPS, dtype=self.dtype)
    drop = layers.DropPath(self.drop_path)
    y = LocalWindowAttention(self.num_heads, self.window_size, dtype=self.dtype,
                             name="attn")(norm(name="norm1")(x))
    x = x + drop(y, deterministic=not train)
    y = MlpDWBN(int(x.shape[-1] * self.mlp_ratio), self.dwconv_impl, dtype=self.dtype,
                name="mlp")(norm(name="norm2")(x), bn_train)
    return x + drop(y, deterministic=not train)


def _dw_down(x, features: int, name: str, train: bool, dtype, relu: bool):
  """Stride-2 3x3 depthwise conv + BN, 1x1 conv to `features` + BN [+ ReLU]: one step of the
  fusion's downsampling (the official nn.Sequential: `{name}_0` .. `{name}_3`)."""
  c = x.shape[-1]
  x = layers.Conv(c, (3, 3), strides=2, padding=((1, 1), (1, 1)), feature_group_count=c,
              use_bias=False, dtype=dtype, name=f"{name}_0")(x)
  x = layers.batch_norm(train, dtype, f"{name}_1")(x)
  x = layers.Conv(features, (1, 1), use_bias=False, dtype=dtype, name=f"{name}_2")(x)
  x = layers.batch_norm(train, dtype, f"{name}_3")(x)
  return nn.relu(x) if relu else x


class HRFormerModule(nn.Module):
  """Parallel streams of transformer blocks, then the multi-resolution fusion (the official
  HighResolutionTransformerModule)."""
  num_blocks: Sequence[int]
  num_heads: Sequence[int]
  num_window_sizes: Sequence[int]
  num_mlp_ratios: Sequence[float]
  drop_paths: Sequence[float]  # per block index, shared by every stream
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, xs: Sequence[jnp.ndarray], train: bool, bn_train: bool
               ) -> Tuple[jnp.ndarray, ...]:
    ys = []
    for i, x in enumerate(xs):
      for b in range(self.num_blocks[i]):
        x = TransformerBlock(self.num_heads[i], self.num_window_sizes[i],
                             self.num_mlp_ratios[i], self.drop_paths[b], self.dwconv_impl,
                             dtype=self.dtype, name=f"branches_{i}_{b}")(x, train, bn_train)
      ys.append(x)
    n = len(ys)
    if n == 1:
      return tuple(ys)
    widths = [y.shape[-1] for y in ys]
    outs = []
    for i in range(n):
      total = 0
      for j in range(n):
        name = f"fuse_layers_{i}_{j}"
        if j == i:
          y = ys[j]
        elif j > i:  # lower resolution: 1x1 + BN, nearest x2^(j-i), then exactly this size
          y = _conv_bn(ys[j], widths[i], 1, 1, name, bn_train, self.dtype, relu=False)
          f = 2 ** (j - i)
          y = jnp.repeat(jnp.repeat(y, f, axis=1), f, axis=2)
          y = resize_align_corners(y, ys[i].shape[1:3])
        else:  # higher resolution: i - j depthwise-separable stride-2 steps
          y = ys[j]
          for k in range(i - j):
            last = k == i - j - 1
            y = _dw_down(y, widths[i] if last else widths[j], f"{name}_{k}", bn_train,
                         self.dtype, relu=not last)
        total = total + y
      outs.append(nn.relu(total))
    return tuple(outs)


def _check_extra(extra: Mapping[str, Any]):
  """ConfigErrors naming the `extra` key that does not describe an HRFormer."""
  for s in range(1, 5):
    cfg = extra.get(f"stage{s}")
    if cfg is None:
      raise ConfigError(f"HRFormer extra needs stage1..stage4, stage{s} is missing")
    keys = STAGE_KEYS if s > 1 else STAGE_KEYS[:2]
    want = "BOTTLENECK" if s == 1 else "TRANSFORMER_BLOCK"
    if cfg.get("block") != want:
      raise ConfigError(f"HRFormer extra.stage{s}.block must be {want!r}, got "
                        f"{cfg.get('block')!r}")
    if cfg.get("num_branches") != (1 if s == 1 else s):
      raise ConfigError(f"HRFormer extra.stage{s}.num_branches must be {1 if s == 1 else s}, "
                        f"got {cfg.get('num_branches')!r}")
    for key in keys:
      if key not in cfg or len(cfg[key]) != cfg["num_branches"]:
        raise ConfigError(f"HRFormer extra.stage{s}.{key} needs one entry per branch "
                          f"({cfg['num_branches']}), got {cfg.get(key)!r}")
    if s > 1:
      for c, h in zip(cfg["num_channels"], cfg["num_heads"]):
        if c % h:
          raise ConfigError(f"HRFormer extra.stage{s}: {c} channels do not split into "
                            f"{h} heads")
      if max(cfg["num_blocks"]) > cfg["num_blocks"][0]:
        # The drop-path rates are laid out by the first stream's block count (official).
        raise ConfigError(f"HRFormer extra.stage{s}.num_blocks: no stream may have more "
                          f"blocks than the first, got {tuple(cfg['num_blocks'])}")


class HRFormer(nn.Module):
  """The official HighResolutionTransformer; `extra` is its stage spec (`hrformer_extra`)."""
  extra: Optional[Mapping[str, Any]] = None  # None: HRFormer-S
  drop_path_rate: float = 0.2  # the official HRT_SMALL / HRT_BASE default
  norm_eval: bool = False  # every BN uses its running statistics, also in training
  dwconv_impl: str = "auto"  # layers.DepthwiseConv: "auto", "shift" or "xla"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    extra = HRFORMER_VARIANTS["small"] if self.extra is None else self.extra
    _check_extra(extra)
    stages = [extra[f"stage{s}"] for s in range(1, 5)]
    bn_train = train and not self.norm_eval

    # Stochastic depth grows linearly over the transformer blocks of stages 2-4, counted
    # along the first stream (official: depth = num_blocks[0] * num_modules per stage).
    depths = [cfg["num_blocks"][0] * cfg["num_modules"] for cfg in stages[1:]]
    rates = np.linspace(0.0, self.drop_path_rate, sum(depths)).tolist()

    for i in (1, 2):  # stem: two stride-2 3x3 convs, always 64 wide
      x = layers.Conv(64, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False,
                  dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(layers.batch_norm(bn_train, self.dtype, f"bn{i}")(x))

    planes = stages[0]["num_channels"][0]
    for b in range(stages[0]["num_blocks"][0]):
      x = Block(planes, "bottleneck",
                downsample=b == 0 and x.shape[-1] != planes * EXPANSION["bottleneck"],
                dtype=self.dtype, name=f"layer1_{b}")(x, bn_train)
    ys = [x]

    offset = 0
    for s, cfg in enumerate(stages[1:], 2):
      ys = transition(ys, cfg["num_channels"], f"transition{s - 1}", bn_train, self.dtype)
      nb = cfg["num_blocks"][0]
      for m in range(cfg["num_modules"]):
        ys = HRFormerModule(
            tuple(cfg["num_blocks"]), tuple(cfg["num_heads"]),
            tuple(cfg["num_window_sizes"]), tuple(cfg["num_mlp_ratios"]),
            tuple(rates[offset + nb * m:offset + nb * (m + 1)]), self.dwconv_impl,
            dtype=self.dtype, name=f"stage{s}_{m}")(ys, train, bn_train)
      offset += nb * cfg["num_modules"]
    return tuple(ys)


BACKBONES.register("hrformer", HRFormer)
for _name, _extra in HRFORMER_VARIANTS.items():
  BACKBONES.register(f"hrformer_{_name}", functools.partial(HRFormer, extra=_extra))
