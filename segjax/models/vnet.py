"""V-Net (Milletari, Navab and Ahmadi, "V-Net: Fully Convolutional Neural Networks for
Volumetric Medical Image Segmentation", 3DV 2016): a residual 3-D encoder-decoder.

Fig. 2 of the paper, on a (B, D, H, W, 1) volume (channels last, like every segjax model):

    stage 0 (16 ch, full size):  1 conv 5x5x5                 + the input tiled to 16 ch, PReLU
      down: conv 2x2x2 stride 2 -> 32 ch, PReLU
    stage 1 (32 ch, 1/2):        2 convs 5x5x5                + the stage's input, PReLU
      ...   stages 2, 3, 4 (64, 128, 256 ch; 1/4, 1/8, 1/16): 3 convs each
      up: transposed conv 2x2x2 stride 2 -> 128 ch, PReLU; concat stage 3's output -> 256 ch
    decoder 1/8 (256 ch):        3 convs 5x5x5                + the concatenation, PReLU
      ...   decoder 1/4, 1/2, full size (128, 64, 32 ch): 3, 2, 1 convs
    1x1x1 conv -> num_classes logits (the softmax is the loss's and evaluation's argmax's)

Inside a stage every convolution but the last is followed by a PReLU; the last one's output
is added to the stage's input and the sum goes through a PReLU (the authors' Caffe prototxt,
github.com/faustomilletari/VNet Prototxt/train_noPooling_ResNet_cinque.prototxt, which is also
how the paper's "residual function" reads). PReLUs are per channel with slope 0.25 at init
(Caffe's and torch's default), kernels He-initialised over the average fan (the prototxt's
msra filler, variance_norm AVERAGE), biases zero.

Where the paper and its code differ, the default is the paper and an option gives the code:
  * conv counts: the figure's 1, 2, 3, 3, 3 (encoder) and 3, 3, 2, 1 (decoder, bottom up);
    the authors' prototxt has 1, 1, 2, 3, 3 and 3, 2, 1, 1 (`encoder_convs`,
    `decoder_convs`); github.com/mattmacy/vnet.pytorch 1, 1, 2, 3, 2 and 2, 2, 1, 1.
  * the prototxt and the PyTorch port put a 5x5x5 conv to 2 channels + PReLU before the 1x1x1
    conv; the paper's text has the 1x1x1 conv only (`output_conv=True` adds it).
  * the paper has no normalisation; the port adds BatchNorm after every conv (`norm=True`:
    conv without bias -> BatchNorm -> PReLU, as segjax's ConvBNAct). The port's dropout and
    its PReLU on the last conv of a stage are not reproduced.
`widths` shrinks the model (tests use (2, 4, 8, 8, 16)); the first width must be a multiple of
the input channels (the input is tiled to it) and every side a multiple of 2 ** (stages - 1).
`conv_impl` picks how the 3-D convolutions are computed (see Conv3D: folded into 2-D work on
CPU, where XLA's 3-D convolution is an order of magnitude slower). The default loss is the
paper's Dice (segjax.losses.dice with per_class=True on the softmax).
Parameter names follow the port's modules (`in_tr`, `down_tr{1..4}`, `up_tr{3..0}` by the level
they output, `ops_{k}`, `out_tr`).
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

# segjax.losses imports segjax.models.layers: use `losses.*` inside functions only (see
# segjax/models/segmentor.py).
from segjax import losses
from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import MODELS

Dtype = Any

PAPER_WIDTHS = (16, 32, 64, 128, 256)
PAPER_ENCODER_CONVS = (1, 2, 3, 3, 3)
PAPER_DECODER_CONVS = (3, 3, 2, 1)  # from the bottom (1/8) up to full size
# The loss the paper trains with: 1 - its eq. 1 on the softmax of each foreground class.
VNET_DICE = {"name": "dice", "use_sigmoid": False, "per_class": True}

# He-normal over the average fan: Caffe's msra filler with variance_norm AVERAGE.
_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_avg", "normal")


def _resolve_impl(impl: str) -> str:
  if impl not in ("auto", "fold", "xla"):
    raise ConfigError(f"model.conv_impl must be 'auto', 'fold' or 'xla', got {impl!r}")
  if impl == "auto":
    return "fold" if jax.default_backend() == "cpu" else "xla"
  return impl


class Conv3D(nn.Module):
  """k x k x k convolution of (B, D, H, W, C) volumes, 'same' padding at stride 1, or k = stride
  (V-Net's 2x2x2 stride-2 down-convolution). Parameters are flax nn.Conv's (`kernel`
  (k, k, k, in, out), `bias`), so checkpoints do not depend on `impl`.

  impl="xla": one 3-D `lax.conv_general_dilated`. impl="fold" computes the same sums as 2-D
  work: at stride 1 the k depth taps are stacked along the channels ((B, D, H, W, k C)) and a
  k x k 2-D convolution with a (k, k, k C, out) kernel runs over the B * D slices; at
  k = stride the windows do not overlap, so it is a space-to-depth reshape and one matrix
  product. XLA:CPU's 3-D convolution is far slower than its 2-D one: a 5x5x5 16->16 conv on a
  2x16x32x32 batch took 0.56 s forward / 1.43 s forward + backward against 0.030 / 0.097 s
  folded (2 shared cores, jax 0.10). "auto" folds on CPU and uses XLA's 3-D convolution on
  GPU/TPU.
  """
  features: int
  kernel_size: int = 5
  strides: int = 1
  use_bias: bool = True
  impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    k, s, c = self.kernel_size, self.strides, x.shape[-1]
    kernel = self.param("kernel", _KERNEL_INIT, (k, k, k, c, self.features), jnp.float32)
    dtype = self.dtype or x.dtype
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if s not in (1, k):
      raise ValueError(f"Conv3D computes stride 1 or stride = kernel size, got {s} and {k}")
    if _resolve_impl(self.impl) == "xla":
      p = (k - s) // 2
      y = jax.lax.conv_general_dilated(x, kernel, (s,) * 3, ((p, p),) * 3,
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    elif s == k:  # non-overlapping windows: space-to-depth, then (voxels, k^3 C) @ (k^3 C, out)
      b, d, h, w = x.shape[0], x.shape[1] // k, x.shape[2] // k, x.shape[3] // k
      x = x.reshape(b, d, k, h, k, w, k, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
      y = jnp.dot(x.reshape(-1, k ** 3 * c), kernel.reshape(k ** 3 * c, self.features))
      y = y.reshape(b, d, h, w, self.features)
    else:  # depth taps stacked along the channels, then a 2-D conv over all slices
      b, d, h, w = x.shape[:4]
      p = k // 2
      xp = jnp.pad(x, ((0, 0), (p, p), (0, 0), (0, 0), (0, 0)))
      taps = jnp.concatenate([xp[:, dz:dz + d] for dz in range(k)], axis=-1)
      kernel2d = kernel.transpose(1, 2, 0, 3, 4).reshape(k, k, k * c, self.features)
      y = jax.lax.conv_general_dilated(taps.reshape(b * d, h, w, k * c), kernel2d, (1, 1),
                                       ((p, p), (p, p)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape(b, d, h, w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


class ConvTranspose3D(nn.Module):
  """2x2x2 stride-2 transposed convolution (V-Net's up-convolution), exactly flax's
  nn.ConvTranspose(features, (2, 2, 2), strides=2, padding="VALID") with the same parameters:
  output voxel (2i + a, 2j + b, 2l + c) = x[i, j, l] @ kernel[1 - a, 1 - b, 1 - c] (+ bias).
  impl="fold" computes it as one matrix product and a depth-to-space reshape (see Conv3D)."""
  features: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", _KERNEL_INIT, (2, 2, 2, c, self.features), jnp.float32)
    dtype = self.dtype or x.dtype
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if _resolve_impl(self.impl) == "xla":
      y = jax.lax.conv_transpose(x, kernel, (2, 2, 2), "VALID",
                                 dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    else:
      b, d, h, w = x.shape[:4]
      flipped = kernel[::-1, ::-1, ::-1].transpose(3, 0, 1, 2, 4).reshape(c, 8 * self.features)
      y = jnp.dot(x.reshape(-1, c), flipped).reshape(b, d, h, w, 2, 2, 2, self.features)
      y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, 2 * d, 2 * h, 2 * w, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(dtype)
    return y


class ConvUnit(nn.Module):
  """k x k x k conv ('same' padding) [-> BatchNorm] [-> PReLU]: one arrow of Fig. 2."""
  features: int
  kernel_size: int = 5
  strides: int = 1
  activate: bool = True
  norm: bool = False
  conv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv3D(self.features, self.kernel_size, self.strides, use_bias=not self.norm,
               impl=self.conv_impl, dtype=self.dtype, name="conv1")(x)
    if self.norm:
      x = layers.batch_norm(train, self.dtype, "bn1")(x)
    return layers.PReLU(name="relu1")(x) if self.activate else x


class ResidualStage(nn.Module):
  """`num_convs` 5x5x5 convs to `features` channels; the last one's output plus `residual`,
  then a PReLU: the residual function V-Net learns at every stage."""
  features: int
  num_convs: int
  kernel_size: int = 5
  norm: bool = False
  conv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, residual, train: bool):
    out = x
    for k in range(self.num_convs):
      out = ConvUnit(self.features, self.kernel_size, activate=k < self.num_convs - 1,
                     norm=self.norm, conv_impl=self.conv_impl, dtype=self.dtype,
                     name=f"ops_{k}")(out, train)
    return layers.PReLU(name="relu2")(out + residual)


class DownTransition(nn.Module):
  """2x2x2 stride-2 conv to `features` channels + PReLU (the paper's learnt down-sampling in
  place of pooling), then a residual stage on it."""
  features: int
  num_convs: int
  kernel_size: int = 5
  norm: bool = False
  conv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    down = ConvUnit(self.features, 2, strides=2, norm=self.norm, conv_impl=self.conv_impl,
                    dtype=self.dtype, name="down_conv")(x, train)
    return ResidualStage(self.features, self.num_convs, kernel_size=self.kernel_size,
                         norm=self.norm, conv_impl=self.conv_impl, dtype=self.dtype,
                         name="stage")(down, down, train)


class UpTransition(nn.Module):
  """2x2x2 stride-2 transposed conv to `features // 2` channels + PReLU, concatenated with the
  encoder's features of that level (`features // 2` channels in Fig. 2), then a residual
  stage at `features` channels."""
  features: int
  num_convs: int
  kernel_size: int = 5
  norm: bool = False
  conv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, skip, train: bool):
    up = ConvTranspose3D(self.features - skip.shape[-1], use_bias=not self.norm,
                         impl=self.conv_impl, dtype=self.dtype, name="up_conv")(x)
    if self.norm:
      up = layers.batch_norm(train, self.dtype, "bn1")(up)
    up = layers.PReLU(name="relu1")(up)
    cat = jnp.concatenate([up, skip], axis=-1)
    return ResidualStage(self.features, self.num_convs, kernel_size=self.kernel_size,
                         norm=self.norm, conv_impl=self.conv_impl, dtype=self.dtype,
                         name="stage")(cat, cat, train)


class VNet(nn.Module):
  """V-Net (see the module docstring): (B, D, H, W, C) volume -> (logits (B, D, H, W, K), ())."""
  num_classes: int
  widths: Tuple[int, ...] = PAPER_WIDTHS
  encoder_convs: Tuple[int, ...] = PAPER_ENCODER_CONVS
  decoder_convs: Tuple[int, ...] = PAPER_DECODER_CONVS
  output_conv: bool = False
  norm: bool = False
  kernel_size: int = 5
  conv_impl: str = "auto"  # see Conv3D
  aux_loss_weights: Tuple[float, ...] = ()  # no auxiliary outputs
  output_losses: Tuple[Tuple[Tuple[str, float, Tuple], ...], ...] = ()
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, volumes: jnp.ndarray, train: bool = False
               ) -> Tuple[jnp.ndarray, Tuple[jnp.ndarray, ...]]:
    if volumes.ndim != 5:
      raise ConfigError(f"vnet takes volumes (B, D, H, W, C), got an input of shape "
                        f"{volumes.shape}; data.crop_size must have three sides (D, H, W)")
    factor = 2 ** (len(self.widths) - 1)
    if any(s % factor for s in volumes.shape[1:4]):
      raise ConfigError(f"vnet halves the volume {len(self.widths) - 1} times: its sides must be "
                        f"multiples of {factor}, got {volumes.shape[1:4]} (data.crop_size and "
                        "the evaluated volumes' size)")
    if self.widths[0] % volumes.shape[-1]:
      raise ConfigError(f"model.widths[0]={self.widths[0]} must be a multiple of the input's "
                        f"{volumes.shape[-1]} channels (stage 0 adds the input tiled to it)")
    kw = dict(kernel_size=self.kernel_size, norm=self.norm, conv_impl=self.conv_impl,
              dtype=self.dtype)
    x = volumes.astype(self.dtype) if self.dtype else volumes
    # Stage 0: its residual is the input itself, tiled over the stage's channels (the
    # prototxt's Split + Concat of the 1-channel input into 16).
    tiled = jnp.tile(x, (1, 1, 1, 1, self.widths[0] // x.shape[-1]))
    features = [ResidualStage(self.widths[0], self.encoder_convs[0], **kw,
                              name="in_tr")(x, tiled, train)]
    for level in range(1, len(self.widths)):
      features.append(DownTransition(self.widths[level], self.encoder_convs[level], **kw,
                                     name=f"down_tr{level}")(features[-1], train))
    out = features.pop()
    for level, num_convs in zip(range(len(self.widths) - 2, -1, -1), self.decoder_convs):
      out = UpTransition(2 * self.widths[level], num_convs, **kw,
                         name=f"up_tr{level}")(out, features[level], train)
    if self.output_conv:
      out = ConvUnit(self.num_classes, name="out_tr_conv", **kw)(out, train)
    logits = Conv3D(self.num_classes, 1, impl=self.conv_impl, dtype=self.dtype,
                    name="out_tr")(out)
    return logits, ()


def build_vnet(num_classes: int, dtype: Any = None, widths: Sequence[int] = PAPER_WIDTHS,
               encoder_convs: Sequence[int] = PAPER_ENCODER_CONVS,
               decoder_convs: Sequence[int] = PAPER_DECODER_CONVS, output_conv: bool = False,
               norm: bool = False, kernel_size: int = 5, conv_impl: str = "auto",
               loss: Sequence = (VNET_DICE,), backbone=None, decode_head=None, neck=None,
               auxiliary_head=()) -> VNet:
  """config.model = {"name": "vnet", "widths": ..., "loss": ({"name": "dice", ...},), ...}.

  `loss` is the model's loss list (as a head's `loss`, see segjax.losses), V-Net's Dice by
  default. V-Net is a whole model: `backbone`, `decode_head`, `neck` and `auxiliary_head` (an
  encoder_decoder's keys, which the registry walk of tests/test_models.py passes) are not
  used, and a warning says so.
  """
  unused = [name for name, value in (("backbone", backbone), ("decode_head", decode_head),
                                     ("neck", neck), ("auxiliary_head", auxiliary_head)) if value]
  if unused:
    logging.warning("model.%s: not used by vnet (a whole model); ignored",
                    ", model.".join(unused))
  widths, encoder_convs, decoder_convs = (tuple(int(v) for v in x)
                                          for x in (widths, encoder_convs, decoder_convs))
  if len(widths) < 2 or min(widths) <= 0:
    raise ConfigError(f"model.widths must be two or more positive widths, got {widths}")
  if len(encoder_convs) != len(widths) or min(encoder_convs) < 1:
    raise ConfigError(f"model.encoder_convs needs one count >= 1 per width ({len(widths)}), "
                      f"got {encoder_convs}")
  if len(decoder_convs) != len(widths) - 1 or min(decoder_convs) < 1:
    raise ConfigError(f"model.decoder_convs needs one count >= 1 per up-sampling "
                      f"({len(widths) - 1}), got {decoder_convs}")
  _resolve_impl(conv_impl)  # a ConfigError now rather than at the first step
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ConfigError(f"model.kernel_size must be odd ('same' padding), got {kernel_size}")
  if isinstance(loss, str) or hasattr(loss, "keys") or not loss:
    raise ConfigError(f"model.loss must be a non-empty sequence of mappings like "
                      f"{VNET_DICE}, got {loss!r}")
  specs = tuple(losses.loss_spec(entry, f"model.loss[{i}]", num_classes)
                for i, entry in enumerate(loss))
  return VNet(num_classes=num_classes, widths=widths, encoder_convs=encoder_convs,
              decoder_convs=decoder_convs, output_conv=bool(output_conv), norm=bool(norm),
              kernel_size=int(kernel_size), conv_impl=conv_impl, output_losses=(specs,),
              dtype=dtype)


MODELS.register("vnet", build_vnet)
