"""Building blocks shared by backbones and heads."""
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def resize_bilinear(x: jax.Array, size: Sequence[int], align_corners: bool = False
                    ) -> jax.Array:
  """Bilinear resize of NHWC `x` to `size` (h, w).

  Half-pixel centres without antialiasing: identical to PyTorch's
  `F.interpolate(mode="bilinear", align_corners=False)`, which almost every reference decoder
  uses; align_corners=True is `resize_align_corners` (the heads that set mmseg's
  `align_corners=True`, e.g. STDC's, are upsampled that way).
  """
  h, w = int(size[0]), int(size[1])
  if x.shape[1:3] == (h, w):
    return x
  if align_corners:
    return resize_align_corners(x, (h, w))
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method="bilinear",
                          antialias=False)


def resize_align_corners(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize of NHWC `x` with corner pixels aligned: PyTorch's
  `F.interpolate(mode="bilinear", align_corners=True)` (mmseg's PSAHead on odd maps, the
  official RefineNet, OCNet and HRFormer code, heads configured with `align_corners=True`)."""
  def along(x, axis, n_out):
    n_in = x.shape[axis]
    if n_in == n_out:
      return x
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(src.astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(np.float32).reshape([-1 if a == axis else 1
                                                   for a in range(x.ndim)])
    frac = jnp.asarray(frac, x.dtype)
    return (1 - frac) * jnp.take(x, i0, axis=axis) + frac * jnp.take(x, i1, axis=axis)
  return along(along(x, 1, int(size[0])), 2, int(size[1]))


def resize_linear(x: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """`resize_bilinear` for images (B, H, W, C), its trilinear twin for volumes (B, D, H, W, C):
  losses and evaluation resize logits of either rank with it. Half-pixel centres without
  antialiasing, as torch's `F.interpolate(mode="trilinear", align_corners=False)`;
  align_corners=True for images only."""
  size = tuple(int(s) for s in size)
  if len(size) == 2:
    return resize_bilinear(x, size, align_corners)
  if align_corners:
    raise ValueError("align_corners=True resizes images, not volumes")
  if x.shape[1:-1] == size:
    return x
  return jax.image.resize(x, (x.shape[0],) + size + (x.shape[-1],), method="linear",
                          antialias=False)


class Dense(nn.Module):
  """nn.Dense over the last axis, computed on (rows, features) with the same param names.

  Why: for a 4-D input XLA:CPU computes the kernel gradient (a contraction over three leading
  axes) several times slower than for the same data as a 2-D matrix; in SegFormer's Mix-FFN
  this made the backward pass 20x the forward (segjax/tools/benchmark.py measures it).
  """
  features: int
  use_bias: bool = True
  dtype: Optional[Dtype] = None
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    dtype = self.dtype or x.dtype
    lead = x.shape[:-1]
    y = jnp.dot(x.reshape(-1, x.shape[-1]).astype(dtype), kernel.astype(dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y.reshape(lead + (self.features,))


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          bias: Optional[jax.Array] = None) -> jax.Array:
  """Multi-head attention softmax(q k^T / sqrt(d) + bias) v on (batch, tokens, heads, d) arrays.

  Every attention of the zoo goes through here. On GPU and TPU it is
  `jax.nn.dot_product_attention`, which lowers to fused kernels there. On CPU it is the same
  maths as two einsums and a softmax, because that measured faster there, forward + backward
  (experiments/perf/attention_impl.py, 2 cores, jax 0.10.2: MiT-B1 512x512 stage-2 attention
  77 vs 122 ms, Swin-T windows 134 vs 126 ms, ViT-B 1024 tokens 497 vs 795 ms). With a single
  head (MiT/PVT stage 1) the einsums become plain batched matmuls on (batch, tokens, d), which
  took 151 ms instead of 236 ms for MiT-B1's 16384-query stage 1; with several heads, putting
  the heads first for batched matmuls lost 7-13% to the einsums, so they stay.
  Logits and softmax are float32 even for bfloat16 inputs, as in jax's implementation.
  `bias` (e.g. Swin's relative position bias plus its shifted-window mask) broadcasts to
  (batch, heads, q, k).
  """
  if jax.default_backend() != "cpu":
    return jax.nn.dot_product_attention(q, k, v, bias=bias)
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
  if q.shape[2] == 1 and bias is None:  # one head (MiT/PVT stage 1): plain batched matmuls
    logits = jnp.matmul(q[:, :, 0], jnp.swapaxes(k[:, :, 0], 1, 2),
                        preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.matmul(probs, v[:, :, 0])[:, :, None]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _save_matmuls(prim, *_, **__) -> bool:
  """jax.checkpoint policy: keep the outputs of matrix products and convolutions, recompute
  the rest (norms, activations, softmax, residual adds) in the backward pass."""
  return prim in (jax.lax.dot_general_p, jax.lax.conv_general_dilated_p)


# train.remat: how much of each backbone block the backward pass recomputes instead of keeping.
REMAT_POLICIES = {
    "none": None,  # keep every intermediate (fastest, most memory)
    "block": _save_matmuls,  # keep matmul/conv outputs of each block, recompute the rest
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only each block's input
}


def remat(block_cls, policy: str):
  """`block_cls`, or the same module recomputed in the backward pass under a REMAT_POLICIES
  policy (flax's lifted jax.checkpoint; parameter names and values are unchanged, so
  checkpoints do not depend on it). Blocks are called as `block(x, train)`: `train` is a
  Python bool, static for the checkpoint."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {sorted(REMAT_POLICIES)}, got {policy!r}")
  if REMAT_POLICIES[policy] is None:
    return block_cls
  return nn.remat(block_cls, policy=REMAT_POLICIES[policy], static_argnums=(2,))


class Conv(nn.Conv):
  """nn.Conv (same fields, parameters and outputs) whose 1x1 case runs as a matrix product.

  Why: XLA:CPU computes the kernel gradient of a 1x1 convolution as a convolution over the
  spatial axes, several times slower than the same contraction as a 2-D matmul: SegFormer's
  1024->256 fuse layer at 2x128x128 took 1.83 s forward+backward as a convolution and 0.41 s
  as a matmul (experiments/perf/pointwise_conv.py); it was 23% of the B1 train step. A 1x1
  convolution is a matmul on every backend, so the rewrite is not backend-specific. Kernels
  larger than 1x1, grouped, padded or input-dilated convolutions go to nn.Conv unchanged.
  """

  def _pointwise(self, inputs) -> bool:
    padding = self.padding
    zero_pad = padding in ("SAME", "VALID") or (
        not isinstance(padding, str) and all(
            (p == 0) if isinstance(p, int) else tuple(p) == (0, 0)
            for p in (padding if isinstance(padding, (list, tuple)) else [padding])))
    return (tuple(self.kernel_size) == (1, 1) and inputs.ndim == 4 and zero_pad
            and self.feature_group_count == 1 and self.input_dilation in (None, 1, (1, 1))
            and self.mask is None)

  @nn.compact
  def __call__(self, inputs):
    if not self._pointwise(inputs):
      return super().__call__(inputs)
    strides = self.strides or 1
    sh, sw = (strides, strides) if isinstance(strides, int) else tuple(strides)
    if (sh, sw) != (1, 1):
      inputs = inputs[:, ::sh, ::sw]
    cin = inputs.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (1, 1, cin, self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = jnp.dot(x.reshape(-1, cin), kernel.reshape(cin, self.features),
                precision=self.precision)
    y = y.reshape(x.shape[:-1] + (self.features,))
    return y + bias if bias is not None else y


class PReLU(nn.Module):
  """Per-channel PReLU (He et al. 2015): max(x, 0) + a_c min(x, 0), one learnt slope a_c per
  channel, 0.25 at init.

  torch's nn.PReLU(C) and Caffe's PReLU (channel_shared=false), the activation of V-Net, ENet
  and ESPNet. Flax's nn.PReLU shares one slope over all channels, which none of them does.
  The slopes are named `weight`, as torch names them. (The field is `init_slope`: a field
  named `init` would shadow Module.init.)"""
  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x):
    slope = self.param("weight", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                       jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample (needs rng 'dropout')."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    rng = self.make_rng("dropout")
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, 'same' padding (odd k), optionally strided, dilated, biased
  and with a channel multiplier: input channel g gives outputs g*m .. g*m + m-1, as nn.Conv
  with feature_group_count=C and C*m features (BiSeNet V2's 6-fold expanding conv).

  Params are stored as that flax Conv's kernel, shape (k, k, 1, C*m), so checkpoints do not
  depend on `impl`. impl="auto" (the default) is "shift" on CPU and "xla" on TPU/GPU, chosen
  when the module is traced. impl="shift" computes the convolution as k*k shifted (strided)
  multiply-adds of the input, repeated m times along channels, which XLA fuses into one loop;
  on CPU it ran several times faster than XLA's grouped convolution, above all in the
  backward pass (segjax/tools/benchmark.py: DeepLabv3+ R50-D8 train step), and 13-75x faster
  for a 3x3 forward + backward with multiplier 6 or stride 2 at BiSeNet V2's sizes (batch 4,
  8x16 to 64x128 maps). impl="xla" uses `lax.conv_general_dilated` with
  feature_group_count=C, the better choice on TPU/GPU.
  """
  kernel_size: int = 3
  impl: str = "auto"
  dilation: int = 1
  use_bias: bool = True
  dtype: Optional[Dtype] = None
  strides: int = 1
  multiplier: int = 1

  @nn.compact
  def __call__(self, x):
    k, d, s, m = self.kernel_size, self.dilation, self.strides, self.multiplier
    c = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c * m), jnp.float32)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    kernel = kernel.astype(dtype)
    p = d * (k // 2)
    impl = self.impl
    if impl == "auto":
      impl = "shift" if jax.default_backend() == "cpu" else "xla"
    if impl == "xla":
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=(s, s), padding=((p, p), (p, p)), rhs_dilation=(d, d),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    elif impl == "shift":
      if m > 1:
        x = jnp.repeat(x, m, axis=-1)
      h, w = x.shape[1], x.shape[2]
      span_h, span_w = s * ((h - 1) // s) + 1, s * ((w - 1) // s) + 1  # (output size - 1)*s + 1
      xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      y = None
      for i in range(k):
        for j in range(k):
          term = xp[:, i * d:i * d + span_h:s, j * d:j * d + span_w:s, :] * kernel[i, j, 0]
          y = term if y is None else y + term
    else:
      raise ValueError(f"DepthwiseConv impl must be 'auto', 'shift' or 'xla', got {self.impl!r}")
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c * m,), jnp.float32).astype(dtype)
    return y


class ConvBNAct(nn.Module):
  """Conv -> BatchNorm -> activation, the unit of most CNN models (mmseg's ConvModule).

  Submodules are named `conv` and `bn` like ConvModule's, so mmseg checkpoints convert by
  name. `norm=False` drops the BatchNorm (the conv then has a bias, unless `use_bias=False`:
  ConvModule's `bias`, "auto" = None); `groups` = input channels (and `features` a multiple
  of them) gives a depthwise conv, computed by DepthwiseConv (`depthwise_impl`, same
  parameters).
  `bn_momentum` is PyTorch's (see `batch_norm`).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  norm: bool = True
  activation: Optional[Callable] = nn.relu
  depthwise_impl: str = "auto"
  bn_momentum: float = 0.1
  use_bias: Optional[bool] = None  # None: a bias exactly when there is no BatchNorm
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    p = self.dilation * (self.kernel_size // 2)
    use_bias = not self.norm if self.use_bias is None else self.use_bias
    cin = x.shape[-1]
    depthwise = self.groups > 1 and self.groups == cin and self.features % cin == 0
    if depthwise and self.kernel_size > 1:
      x = DepthwiseConv(self.kernel_size, self.depthwise_impl, self.dilation,
                        use_bias=use_bias, dtype=self.dtype, strides=self.strides,
                        multiplier=self.features // cin, name="conv")(x)
    else:
      x = Conv(self.features, (self.kernel_size,) * 2, strides=self.strides,
                  padding=((p, p), (p, p)), kernel_dilation=self.dilation,
                  feature_group_count=self.groups, use_bias=use_bias, dtype=self.dtype,
                  name="conv")(x)
    if self.norm:
      x = batch_norm(train, self.dtype, "bn", momentum=self.bn_momentum)(x)
    return self.activation(x) if self.activation is not None else x


class BNActConv(nn.Module):
  """BatchNorm -> activation -> conv: mmcv's ConvModule with order=("norm", "act", "conv"),
  the pre-activation unit of DDRNet's and PIDNet's pyramid pooling (DAPPM, PAPPM), fusion
  (Bag) and heads. The BatchNorm normalises the *input* channels; the conv has no bias
  (ConvModule's bias="auto" with a norm). Names `bn` and `conv` as ConvModule's."""
  features: int
  kernel_size: int = 1
  groups: int = 1
  activation: Optional[Callable] = nn.relu
  bn_momentum: float = 0.1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = batch_norm(train, self.dtype, "bn", momentum=self.bn_momentum)(x)
    if self.activation is not None:
      x = self.activation(x)
    p = self.kernel_size // 2
    return Conv(self.features, (self.kernel_size,) * 2, padding=((p, p), (p, p)),
                feature_group_count=self.groups, use_bias=False, dtype=self.dtype,
                name="conv")(x)


def batch_norm(train: bool, dtype=None, name: Optional[str] = None, eps: float = 1e-5,
               momentum: float = 0.1):
  """PyTorch's BatchNorm2d, defaults included (momentum 0.1, eps 1e-5).

  `momentum` is PyTorch's: the weight of the batch in the running statistics (flax's is the
  weight of the old value, 1 - momentum). mmseg configs set it in norm_cfg (Fast-SCNN: 0.01).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=1.0 - momentum, epsilon=eps,
                      dtype=dtype, name=name)


class SeparableConvBNAct(nn.Module):
  """Depthwise k x k ConvBNAct, then pointwise 1x1 ConvBNAct (mmseg's
  DepthwiseSeparableConvModule: names `depthwise_conv` and `pointwise_conv`).

  The depthwise conv carries the stride; each half's activation (and the pointwise half's
  BatchNorm) can be dropped, as mmseg's `dw_act_cfg` / `pw_norm_cfg` / `pw_act_cfg` do
  (Fast-SCNN's depthwise halves, BiSeNet V2's linear shortcuts and guided aggregation)."""
  features: int
  kernel_size: int = 3
  dilation: int = 1
  strides: int = 1
  depthwise_activation: Optional[Callable] = nn.relu
  pointwise_norm: bool = True
  pointwise_activation: Optional[Callable] = nn.relu
  bn_momentum: float = 0.1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvBNAct(x.shape[-1], self.kernel_size, self.strides, dilation=self.dilation,
                  groups=x.shape[-1], activation=self.depthwise_activation,
                  bn_momentum=self.bn_momentum, dtype=self.dtype,
                  name="depthwise_conv")(x, train)
    return ConvBNAct(self.features, 1, norm=self.pointwise_norm,
                     activation=self.pointwise_activation, bn_momentum=self.bn_momentum,
                     dtype=self.dtype,
                     name="pointwise_conv")(x, train)


def adaptive_avg_pool(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """PyTorch's AdaptiveAvgPool2d on NHWC `x`: output cell i averages input rows
  floor(i*H/n) .. ceil((i+1)*H/n) - 1 (bins overlap when H is not a multiple of n).

  Works at any input size, e.g. 13x17 into 6x6, which a strided pooling cannot do.
  """
  def pool_axis(x, axis, n):
    length = x.shape[axis]
    cells = []
    for i in range(n):
      start, end = (i * length) // n, -(-((i + 1) * length) // n)
      cells.append(jnp.mean(jax.lax.slice_in_dim(x, start, end, axis=axis), axis=axis,
                            keepdims=True))
    return jnp.concatenate(cells, axis=axis)
  return pool_axis(pool_axis(x, 1, int(size[0])), 2, int(size[1]))


def resize_to(x: jax.Array, like: jax.Array) -> jax.Array:
  """Bilinear resize of `x` to the spatial size of `like` (mmseg's `resize(x, size=...)`
  with align_corners=False, which every mmseg config here uses)."""
  return resize_bilinear(x, like.shape[1:3])


def resize_nearest(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Nearest-neighbour resize of NHWC `x` to `size` (h, w), exactly PyTorch's
  `F.interpolate(mode="nearest")`: output pixel i reads input floor(i * in / out) in float32.

  Not jax.image.resize's "nearest", which samples pixel centres (torch's "nearest-exact");
  the two differ whenever out / in is not an integer, e.g. FPN's top-down path at 7x9 -> 13x17.
  """
  def indices(n_in, n_out):
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int32),
                      n_in - 1)
  h, w = int(size[0]), int(size[1])
  if x.shape[1:3] == (h, w):
    return x
  x = jnp.take(x, indices(x.shape[1], h), axis=1)
  return jnp.take(x, indices(x.shape[2], w), axis=2)


class Scale(nn.Module):
  """A learnable scalar multiplier (mmcv's Scale): the `gamma` that DANet and CCNet put on an
  attention branch before adding it to the branch's input. It starts at `init` (0 there, so
  training starts from the identity); the parameter is named `scale` like mmcv's."""
  init: float = 0.0

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(self.init), (), jnp.float32)
    return x * scale.astype(x.dtype)


def _cubic_weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float32 matrix of PyTorch's bicubic interpolation along one axis.

  torch's upsample_bicubic2d with align_corners=False: source x = (i + 0.5) * n_in / n_out
  - 0.5 (not clamped), taps floor(x) - 1 .. floor(x) + 2 weighted by Keys' cubic kernel with
  a = -0.75, tap indices clamped into [0, n_in - 1] (edge replication). Computed in float32
  like torch's CPU kernel.
  """
  a = np.float32(-0.75)
  scale = np.float32(n_in) / np.float32(n_out)
  x = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  base = np.floor(x)
  t = (x - base).astype(np.float32)

  def near(d):  # |d| <= 1
    return ((a + 2) * d - (a + 3)) * d * d + 1

  def far(d):  # 1 < |d| < 2
    return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

  taps = (far(t + 1), near(t), near(1 - t), far(2 - t))
  weights = np.zeros((n_out, n_in), np.float32)
  rows = np.arange(n_out)
  for k, w in enumerate(taps):
    idx = np.clip(base.astype(np.int64) - 1 + k, 0, n_in - 1)
    np.add.at(weights, (rows, idx), w.astype(np.float32))
  return weights


def resize_bicubic(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bicubic resize of NHWC `x` to `size` (h, w), exactly PyTorch's
  `F.interpolate(mode="bicubic", align_corners=False)` (no antialiasing).

  Not jax.image.resize's "cubic": that uses Keys' kernel with a = -0.5 and renormalises the
  weights at the border, where torch uses a = -0.75 and replicates edge pixels; the two differ
  by a few percent of the signal. ViT position embeddings are resized with this to any input
  size (mmseg's and HF's `interpolate_pos_encoding`). Two small matrix products with the
  weight matrices of _cubic_weights, at full float32 precision.
  """
  h, w = int(size[0]), int(size[1])
  if x.shape[1:3] == (h, w):
    return x
  wh = jnp.asarray(_cubic_weights(x.shape[1], h), x.dtype)
  ww = jnp.asarray(_cubic_weights(x.shape[2], w), x.dtype)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", wh, x, precision=hp)
  return jnp.einsum("pw,bowc->bopc", ww, x, precision=hp)


def max_pool_with_indices(x: jax.Array, window: int = 2, stride: int = 2
                          ) -> Tuple[jax.Array, jax.Array]:
  """Max pooling of NHWC `x` that also returns where each maximum came from (`max_unpool`'s
  input): the "switches" of SegNet's and DeconvNet's decoders.

  Ceil mode, as Caffe pools (both papers' models are Caffe's) and as PyTorch's
  `F.max_pool2d(..., ceil_mode=True)`: an odd side keeps its last row/column in a window of
  its own, so (H, W) pools to (ceil(H / k), ceil(W / k)) and unpools back to exactly (H, W)
  with no pixel dropped. Windows do not overlap (window == stride), which is what lets
  `max_unpool` place values with a one-hot select instead of a scatter.

  Returns (pooled, indices): indices are int32 flat positions h * W + w in the input plane,
  PyTorch's convention (per image and channel), so they compare with and convert to torch's.
  A tie goes to the first maximum in row-major window order (torch and Caffe alike). The
  pooled values are selected at those indices, so the gradient reaches exactly that element
  (jnp.max would split it among ties), through a select rather than a gather, whose
  backward pass would be a scatter.
  """
  if window != stride:
    raise ValueError(f"max_pool_with_indices needs non-overlapping windows (window == stride), "
                     f"got window {window}, stride {stride}")
  k = int(window)
  _, h, w, _ = x.shape
  oh, ow = -(-h // k), -(-w // k)
  x = jnp.pad(x, ((0, 0), (0, oh * k - h), (0, ow * k - w), (0, 0)), constant_values=-jnp.inf)
  # (B, oh, ow, C, k*k): the window's elements in row-major order.
  windows = jnp.stack([x[:, dy::k, dx::k, :] for dy in range(k) for dx in range(k)], axis=-1)
  local = jnp.argmax(windows, axis=-1)
  chosen = local[..., None] == jnp.arange(k * k)
  pooled = jnp.sum(jnp.where(chosen, windows, jnp.zeros((), x.dtype)), axis=-1)
  rows = jnp.arange(oh, dtype=jnp.int32)[:, None, None] * k + local // k
  cols = jnp.arange(ow, dtype=jnp.int32)[None, :, None] * k + local % k
  return pooled, (rows * w + cols).astype(jnp.int32)


def max_unpool(x: jax.Array, indices: jax.Array, output_hw: Sequence[int],
               window: int = 2) -> jax.Array:
  """The inverse of `max_pool_with_indices`: each value of NHWC `x` goes back to the position
  its max came from, zeros elsewhere, in an (output_hw) map (the pre-pool size).

  PyTorch's `F.max_unpool2d(x, indices, window, output_size=output_hw)` for indices from
  `max_pool_with_indices` with the same window. Computed as a one-hot select per window
  position (no scatter: deterministic, fast on TPU); the gradient w.r.t. `x` reads the
  output's gradient at the indices. Indices from anywhere else (outside their own window)
  are not supported.
  """
  k = int(window)
  h, w = int(output_hw[0]), int(output_hw[1])
  b, oh, ow, c = x.shape
  if (oh, ow) != (-(-h // k), -(-w // k)) or indices.shape != x.shape:
    raise ValueError(f"max_unpool: a {oh}x{ow} map with indices {indices.shape} does not come "
                     f"from pooling {h}x{w} by {k}")
  rows = indices // w - jnp.arange(oh, dtype=indices.dtype)[:, None, None] * k
  cols = indices % w - jnp.arange(ow, dtype=indices.dtype)[None, :, None] * k
  local = rows * k + cols
  zero = jnp.zeros((), x.dtype)
  out = jnp.stack([jnp.where(local == j, x, zero) for j in range(k * k)], axis=-1)
  out = out.reshape(b, oh, ow, c, k, k).transpose(0, 1, 4, 2, 5, 3).reshape(b, oh * k, ow * k, c)
  return out[:, :h, :w, :]
