"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015 / PAMI 2016) on VGG-16, and the model wrapper that puts any
model's logits back on the input pixels (`AlignedEncoderDecoder`).

The decoder of the reference (github.com/shelhamer/fcn.berkeleyvision.org, voc-fcn*/net.py),
layer for layer and with its names:

    pool5 -- fc6 (7x7, 4096) -- fc7 (1x1, 4096) -- score_fr (1x1) --------- upscore (x32)  32s
                                                            `-- upscore2 (x2) --+
    pool4 ------------------------------------ score_pool4 (1x1) ------------ fuse_pool4
                                                  upscore16 (x16) <------------'  |     16s
                                                       upscore_pool4 (x2) <-------'
    pool3 ------------------------------------ score_pool3 (1x1) ------------ fuse_pool3
                                                        upscore8 (x8) <---------'       8s

ReLU and dropout 0.5 follow fc6 and fc7. The score layers start at zero (Caffe's default
filler, which net.py leaves in place: "zero-initialize the class scoring layer", PAMI §4.3).
Every upsampling is a bias-free transposed conv `Deconvolution` of kernel 2f and stride f,
initialised to bilinear interpolation of each class channel (surgery.interp); the reference
freezes them (lr_mult 0), which the configs do with optim.lr_mults ("upscore", 0.0).
`skip_scales` multiplies pool4 and pool3 before scoring them: (1, 1) in the staged nets
(voc-fcn16s, voc-fcn8s: fine-tuned from the coarser net), (0.01, 0.0001) in
voc-fcn8s-atonce, whose Scale layers are fixed constants (lr_mult 0; here plain constants,
so the parameters equal voc-fcn8s/net.py's: 134,489,759 with 21 classes).

Alignment. The reference pads the image by 100 in conv1_1 and crops (offsets 5, 9, 31 for
FCN-8s) so its output covers the input at any size, at about twice the cost (500x500 ->
698x698). Here the convs are same-padded, fc6 too, and the crops are where the grids meet:
with 2x2 poolings, upscore2's cell o sits on pool4's cell o - 1 (so `crop 1`), and
upscore_pool4's on pool3's likewise; the final upsampled map is cut at the input size by
`AlignedEncoderDecoder` from the grid geometry (`output_grid`). With `input_pad` = 3 (the
fcn* models' default) the stride-32 grid also samples the very positions of the reference
(conv1_1's extra 99 pixels = 3 + 3 * 32), so away from the borders the logits equal the
reference's exactly (tests/test_vgg_models.py compares with a transcription of net.py,
pad 100 and Caffe crops included); only the border treatment differs (zeros at each layer
instead of one wide pad of the image).

`fcn32s`, `fcn16s` and `fcn8s` (MODELS) are that model: VGG-16 + this head, output at the
input size. `AlignedEncoderDecoder` also serves DeepLab v1, ParseNet and the context module
(largefov_head.py, parsenet_head.py, context_head.py), whose stride-8 logits it resamples
exactly as their references do.
"""
import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models import segmentor
from segjax.models.heads import base
from segjax.models.registry import HEADS, MODELS

Grid = Tuple[float, float]  # (stride, offset): cell i covers input pixels centred on s*i + o


def bilinear_kernel(size: int) -> np.ndarray:
  """FCN's surgery.upsample_filt: the (size, size) bilinear interpolation kernel."""
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  og = np.ogrid[:size, :size]
  return ((1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)).astype(
      np.float32)


def bilinear_init(key, shape, dtype=jnp.float32):
  """(k, k, C, C) kernel with the bilinear kernel between channel c and c and zeros elsewhere
  (surgery.interp: each class upsampled on its own)."""
  del key
  k, _, c_in, c_out = shape
  kernel = np.zeros(shape, np.float32)
  kernel[:, :, np.arange(min(c_in, c_out)), np.arange(min(c_in, c_out))] = (
      bilinear_kernel(k)[:, :, None])
  return jnp.asarray(kernel, dtype)


class Deconvolution(nn.Module):
  """Caffe's Deconvolution (PyTorch's ConvTranspose2d) without bias or padding: input cell i
  adds x[i] * kernel[t] to output s*i + t, so the output has (n - 1) * s + k cells.

  `kernel` is (k, k, in, out), torch's (in, out, k, k) weight transposed, unflipped."""
  features: int
  kernel_size: int
  stride: int
  kernel_init: Callable = bilinear_init
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    # A scatter with stride s is a correlation of the s-dilated input with the flipped kernel.
    return jax.lax.conv_general_dilated(
        x.astype(dtype), kernel[::-1, ::-1].astype(dtype), window_strides=(1, 1),
        padding=((k - 1, k - 1), (k - 1, k - 1)), lhs_dilation=(s, s),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fully_connected(x: jnp.ndarray, channels: int, kernel: int, dilation: int, dropout: float,
                    train: bool, dtype: Any) -> jnp.ndarray:
  """VGG's fc6 and fc7 as convolutions (`fc6`: kernel x kernel, `fc7`: 1x1), each followed by
  ReLU and (element-wise, Caffe's) dropout. fc6 is same-padded. Call it inside a head's
  compact `__call__`: the convs become the head's children `fc6` and `fc7`, the names
  segjax.convert.torchvision_vgg fills from torchvision's classifier.0 and classifier.3."""
  p = dilation * (kernel // 2)
  x = layers.Conv(channels, (kernel, kernel), padding=((p, p), (p, p)),
              kernel_dilation=dilation, dtype=dtype, name="fc6")(x)
  x = nn.Dropout(dropout)(nn.relu(x), deterministic=not train)
  x = layers.Conv(channels, (1, 1), dtype=dtype, name="fc7")(x)
  return nn.Dropout(dropout)(nn.relu(x), deterministic=not train)


def _score(num_classes: int, name: str, dtype: Any) -> layers.Conv:
  return layers.Conv(num_classes, (1, 1), kernel_init=nn.initializers.zeros, dtype=dtype, name=name)


UPSAMPLES = (32, 16, 8)


class FCNSkipHead(nn.Module):
  """The FCN decoder of the module docstring; `upsample` (32, 16 or 8) picks FCN-32s, -16s or
  -8s. Reads pool3, pool4 and pool5 at `in_index` (VGG's default outputs: stages 2-5)."""
  num_classes: int
  upsample: int = 8
  in_index: Sequence[int] = (1, 2, 3)  # pool3, pool4, pool5
  channels: int = 4096  # fc6 / fc7
  fc_kernel: int = 7
  dropout: float = 0.5
  skip_scales: Sequence[float] = (1.0, 1.0)  # pool4, pool3 (at-once: 0.01, 0.0001)
  dtype: Optional[Any] = None

  def __post_init__(self):
    if self.upsample not in UPSAMPLES:
      raise ConfigError(f"model.decode_head.upsample must be one of {UPSAMPLES} (FCN-32s, "
                        f"-16s, -8s), got {self.upsample!r}")
    if len(self.in_index) != 3 or len(self.skip_scales) != 2:
      raise ConfigError("model.decode_head: in_index names (pool3, pool4, pool5) and "
                        f"skip_scales (pool4, pool3), got {tuple(self.in_index)} and "
                        f"{tuple(self.skip_scales)}")
    super().__post_init__()

  def output_grid(self, grids: Sequence[Grid]) -> Grid:
    """Where the upsampled logits' cells sit, given the backbone maps' grids: the last
    upsampling (kernel 2f, stride f) of a stride-f map with offset b puts cell o at
    o - (2f - 1) / 2 + b."""
    finest = {32: 2, 16: 1, 8: 0}[self.upsample]
    stride, offset = grids[self.in_index[finest]]
    if stride != self.upsample:
      raise ConfigError(f"model.decode_head: FCN-{self.upsample}s reads a map of stride "
                        f"{self.upsample} at in_index[{finest}], the backbone gives {stride}")
    return 1.0, offset - (2 * self.upsample - 1) / 2

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    pool3, pool4, pool5 = (base.select_inputs(features, i) for i in self.in_index)
    k, dt = self.num_classes, self.dtype
    x = fully_connected(pool5, self.channels, self.fc_kernel, 1, self.dropout, train, dt)
    score = _score(k, "score_fr", dt)(x)
    if self.upsample == 32:
      return Deconvolution(k, 64, 32, dtype=dt, name="upscore")(score)
    up = Deconvolution(k, 4, 2, dtype=dt, name="upscore2")(score)
    skip = _score(k, "score_pool4", dt)(pool4 * self.skip_scales[0])
    score = up[:, 1:1 + skip.shape[1], 1:1 + skip.shape[2]] + skip  # fuse_pool4
    if self.upsample == 16:
      return Deconvolution(k, 32, 16, dtype=dt, name="upscore16")(score)
    up = Deconvolution(k, 4, 2, dtype=dt, name="upscore_pool4")(score)
    skip = _score(k, "score_pool3", dt)(pool3 * self.skip_scales[1])
    score = up[:, 1:1 + skip.shape[1], 1:1 + skip.shape[2]] + skip  # fuse_pool3
    return Deconvolution(k, 16, 8, dtype=dt, name="upscore8")(score)


def _linear_weights(n_out: int, n_in: int, stride: float, offset: float) -> np.ndarray:
  """(n_out, n_in) matrix: output pixel x linearly interpolates the cells at
  (x - offset) / stride, clamped to the first and last cell."""
  u = np.clip((np.arange(n_out, dtype=np.float64) - offset) / stride, 0, n_in - 1)
  lo = np.floor(u).astype(np.int64)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = u - lo
  weights = np.zeros((n_out, n_in), np.float64)
  np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
  np.add.at(weights, (np.arange(n_out), hi), frac)
  return weights.astype(np.float32)


def place_on_pixels(logits: jnp.ndarray, size: Sequence[int], stride: float,
                    offset: float) -> jnp.ndarray:
  """Logits whose cell i sits on input pixel stride * i + offset, resampled to the pixels
  0 .. size - 1: a crop when the cells are the pixels (stride 1, whole offset), else linear
  interpolation between the two nearest cells (edge cells repeat beyond the grid).

  DeepLab's cells at 8i make this its `Interp` (align_corners) on 8k + 1 inputs; cells at
  8i + 3.5 (2x2 poolings) make it half-pixel bilinear upsampling, the context module's
  bilinear deconvolution away from the border.
  """
  h, w = int(size[0]), int(size[1])
  if stride == 1 and float(offset).is_integer():
    top = -int(offset)
    if top < 0 or top + h > logits.shape[1] or top + w > logits.shape[2]:
      raise ValueError(f"logits of {logits.shape[1:3]} cells from {-top} do not cover "
                       f"{h}x{w} pixels")
    return logits[:, top:top + h, top:top + w]
  hp = jax.lax.Precision.HIGHEST
  wh = jnp.asarray(_linear_weights(h, logits.shape[1], stride, offset), logits.dtype)
  ww = jnp.asarray(_linear_weights(w, logits.shape[2], stride, offset), logits.dtype)
  x = jnp.einsum("oh,bhwc->bowc", wh, logits, precision=hp)
  return jnp.einsum("pw,bowc->bopc", ww, x, precision=hp)


class AlignedEncoderDecoder(segmentor.EncoderDecoder):
  """EncoderDecoder whose logits come back at the input size, each on its pixel.

  The images are padded by `input_pad` zeros above and left (FCN's phase, see the module
  docstring); the decode head's `output_grid(backbone.grids())` says where its cells fall,
  and `place_on_pixels` crops or interpolates them onto the (unpadded) input. The trainer's
  and evaluator's own resize then finds logits at the label size and does nothing, so no
  half-pixel resize shifts a model whose grid is not half-pixel (DeepLab's cells at 8i).
  A backbone or head without a grid (another family's, e.g. in a registry walk) leaves the
  logits as EncoderDecoder returns them. Same fields and parameter names as EncoderDecoder.
  """
  input_pad: int = 0

  def __call__(self, images: jnp.ndarray, train: bool = False):
    size = images.shape[1:3]
    p = int(self.input_pad)
    if p:
      images = jnp.pad(images, ((0, 0), (p, 0), (p, 0), (0, 0)))
    logits, aux = super().__call__(images, train=train)
    head_grid = getattr(self.decode_head, "output_grid", None)
    backbone_grids = getattr(self.backbone, "grids", None)
    if head_grid is None or backbone_grids is None or self.neck is not None:
      return logits, aux
    stride, offset = head_grid(backbone_grids())
    return place_on_pixels(logits, size, stride, offset - p), aux


def aligned_model(head: str, backbone: dict, input_pad: int = 0):
  """A MODELS entry for a paper's model: AlignedEncoderDecoder of `backbone` (the paper's, a
  config may replace or tune it) and the decode head `head` (the config's `decode_head`
  holds its arguments; naming another head builds that one instead, as a registry walk
  does). Nothing but `{"name": "fcn8s"}` builds the paper's model."""
  default_backbone, default_pad = dict(backbone), input_pad

  def build(num_classes: int, backbone=None, decode_head=None, neck=None, auxiliary_head=(),
            input_pad: int = default_pad, dtype: Any = None) -> AlignedEncoderDecoder:
    if int(input_pad) < 0:
      raise ConfigError(f"model.input_pad must be >= 0, got {input_pad}")
    model = segmentor.build_encoder_decoder(
        num_classes, default_backbone if backbone is None else backbone,
        {"name": head, **(decode_head or {})}, neck, auxiliary_head, dtype)
    return AlignedEncoderDecoder(
        backbone=model.backbone, decode_head=model.decode_head, neck=model.neck,
        auxiliary_head=model.auxiliary_head, aux_loss_weights=model.aux_loss_weights,
        output_losses=model.output_losses, input_pad=int(input_pad))
  return build


# conv1_1's pad 100 is 99 pixels beyond a same-padded conv: 3 (mod 32) sets the grid's phase.
FCN_INPUT_PAD = 3

for _up in UPSAMPLES:
  HEADS.register(f"fcn{_up}s_head", functools.partial(FCNSkipHead, upsample=_up))
  MODELS.register(f"fcn{_up}s", aligned_model(f"fcn{_up}s_head", {"name": "vgg16"},
                                              FCN_INPUT_PAD))
HEADS.register("fcn_skip_head", FCNSkipHead)
