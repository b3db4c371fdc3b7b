"""U-Net (Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015), a whole model: it does not split into backbone + head.

Fig. 1 of the paper, widths (64, 128, 256, 512, 1024), the valid-convolution form:

    572² ─ conv ×2 ─ 568² x64 ──── crop 392² ──── concat ─ conv ×2 ─ 388² x64 ─ 1x1 ─ 388² x K
     pool ↓                                            ↑ up-conv 196² x128 -> 392² x64
    284² ─ conv ×2 ─ 280² x128 ── crop 200² ── concat ─ conv ×2 ─ 196² x128
     pool ↓                                       ↑ up-conv 100² -> 200² x128
    140² ─ conv ×2 ─ 136² x256 ─ crop 104² ─ concat ─ conv ×2 ─ 100² x256
     pool ↓                                     ↑ up-conv 52² -> 104² x256
     68² ─ conv ×2 ─ 64² x512 ─ crop 56² ─ concat ─ conv ×2 ─ 52² x512
     pool ↓                                  ↑ up-conv 28² -> 56² x512
     32² ─ conv ×2 ─ 28² x1024

(conv: 3x3 convolution + ReLU; pool: 2x2 max-pool, stride 2; up-conv: 2x2 transposed
convolution, stride 2, halving the channels.) Every 3x3 convolution is unpadded ("valid"), so
each costs 2 pixels; the decoder's copy of an encoder map is centre-cropped to the up-convolved
map before concatenation ([cropped copy, up-convolved], the order that the released Caffe
model's layer name `concat_d3cc_u3a-b` suggests). The paper's two dropout layers (rate 0.5) sit
"at the end of the contracting path": after the last two encoder levels, so the copy taken from
the level below the bottleneck is the dropped-out map (as in ports of the released model, whose
Caffe dropout is in place). Up-convolutions have no activation, as the paper's text describes
them (some ports of the released model put a ReLU after each). Weights are drawn from a
Gaussian of std sqrt(2 / fan-in), the paper's initialisation.

Input sizes. With D = len(widths) - 1 poolings, every map entering a 2x2 max-pool must have
an even size, so a valid input tile is s = 2^D k - 4 (k >= 12 for D = 4: 188, 204, ..., 572),
and the output is s - 2m with a margin of m = 6 * 2^D - 4 pixels per side (92 for D = 4:
572 -> 388). `UNet.network` is that raw network: it raises ValueError on any other size.

Alignment with the labels. segjax's losses and evaluator resize a model's logits to the labels
bilinearly (`losses._prepare`, `evaluate._single_scale_fn`); stretching a 388² valid output over
a 572² label map would misalign every pixel. So `UNet.__call__` uses the paper's overlap-tile
strategy instead: it mirrors (reflect-pads) the input by the margin m, plus whatever the bottom
and right sides need to reach the next valid tile, runs the valid network and crops the output
back to the input size. Output pixel (y, x) is then predicted from the input tile centred on
input pixel (y, x), exactly; the convolutions stay valid, and the logits returned have the
input's size, so the trainer's and evaluator's resizes are identities. "To predict the pixels
in the border region of the image, the missing context is extrapolated by mirroring the input
image" (Sec. 2 and Fig. 2 of the paper).

`padding="same"` is the common padded variant (3x3 convolutions with zero padding 1, no
crops; output size = input size): inputs whose sides are not multiples of 2^D are reflect-padded
at the bottom and right to the next multiple and the logits cropped back. `norm=True` puts a
BatchNorm between each convolution and its ReLU (the usual companion of the padded form, e.g.
milesial/Pytorch-UNet); the paper's network has none and it is off by default.

Training with the paper's weight map w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / 2 sigma^2)
is not implemented: d1 and d2 are distances to the nearest and second-nearest *cell*, which
needs instance labels (or a connected-component labelling plus per-instance distance
transforms) that a semantic label map fed to a jitted loss does not carry. The recipe
(configs/unet_folder.py) trains with plain cross-entropy.
"""
import itertools
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

# segjax.losses imports segjax.models.layers (see segmentor.py): `losses.*` in functions only.
from segjax import losses
from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import MODELS

Dtype = Any

PADDINGS = ("valid", "same")
PAD_MODES = ("reflect", "symmetric")  # jnp.pad modes that mirror the image (Fig. 2)


def flat_variance_scaling(scale: float, mode: str, distribution: str) -> Callable:
  """`nn.initializers.variance_scaling(scale, mode, distribution)` for conv kernels (kh, kw,
  in, out) (mode "fan_in" or "fan_avg"), drawn as one (1, size) matrix and reshaped.

  Why: XLA:CPU compiles threefry random bits for 4-D shapes far more slowly than for a
  matrix: the twenty 3x3 kernels of a test-width U-Net took 40 s to initialise under jit, 8 s
  drawn flat (2 busy cores, jax 0.10), and the trainer jits `model.init`. The values drawn are
  the same for the normal distribution (threefry's bits do not depend on the layout).
  """
  def init(key, shape, dtype=jnp.float32):
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
    n = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
    flat = nn.initializers.variance_scaling(scale / n, "fan_in", distribution)(
        key, (1, math.prod(shape)), dtype)
    return flat.reshape(shape)
  return init


# The paper's initialisation: "a Gaussian distribution with a standard deviation of
# sqrt(2/N), where N denotes the number of incoming nodes of one neuron".
PAPER_INIT = flat_variance_scaling(2.0, "fan_in", "normal")


class Dropout(nn.Module):
  """nn.Dropout (needs rng "dropout"), its keep-mask drawn as one flat vector and reshaped.

  Why: as for `flat_variance_scaling`, threefry bits for 4-D shapes compile slowly on CPU;
  UNet++'s twelve dropout layers in a test-width train step took ~10 s more to compile than
  without dropout (2 busy cores), most of it in the masks.
  """
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.size,)).reshape(x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, each followed by a ReLU: one box-to-box step of Fig. 1.

  padding "valid" (the paper: each conv loses a 1-pixel border) or "same" (zero padding 1).
  norm: BatchNorm before each ReLU (the conv then has no bias). dropout: after each ReLU
  (UNet++'s official `standard_unit`; U-Net's paper places its dropout elsewhere, see UNet).
  Submodules `conv_0`, `conv_1` (and `bn_0`, `bn_1`).
  """
  features: int
  padding: str = "valid"
  norm: bool = False
  dropout: float = 0.0
  kernel_init: Callable = PAPER_INIT
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    pad = "VALID" if self.padding == "valid" else ((1, 1), (1, 1))
    for i in range(2):
      x = layers.Conv(self.features, (3, 3), padding=pad, use_bias=not self.norm,
                  kernel_init=self.kernel_init, dtype=self.dtype, name=f"conv_{i}")(x)
      if self.norm:
        x = layers.batch_norm(train, self.dtype, f"bn_{i}")(x)
      x = nn.relu(x)
      if self.dropout:
        x = Dropout(self.dropout)(x, deterministic=not train)
    return x


def max_pool(x):
  """The 2x2 max-pool with stride 2 between levels."""
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def center_crop(x, size: Sequence[int]):
  """The central (h, w) window of NHWC `x` ("crop" in Fig. 1; the margins are even)."""
  dy, dx = (x.shape[1] - size[0]) // 2, (x.shape[2] - size[1]) // 2
  return x[:, dy:dy + size[0], dx:dx + size[1]]


def valid_output_size(size: int, depth: int) -> Optional[int]:
  """The valid network's output side for an input side `size`, or None when some map entering
  a max-pool would have an odd or non-positive side (the paper's tile-size constraint)."""
  for _ in range(depth):
    size -= 4
    if size <= 0 or size % 2:
      return None
    size //= 2
  size -= 4
  if size <= 0:
    return None
  for _ in range(depth):
    size = 2 * size - 4
  return size if size > 0 else None


def tile_geometry(size: int, depth: int) -> Tuple[int, int]:
  """(output side, margin per side) of the smallest valid tile whose output covers `size`
  pixels: the valid outputs are the positive 2^D j + 4 and the margin is 6 * 2^D - 4 (see the
  module docstring); the tile is output + 2 * margin."""
  step = 2 ** depth
  out = step * max(-(-(size - 4) // step), -(3 // step)) + 4
  return out, 6 * step - 4


def pad_to_multiple(images, multiple: int, mode: str):
  """Mirror-pads NHWC `images` at the bottom and right to sides divisible by `multiple`."""
  h, w = images.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  if ph or pw:
    images = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
  return images


class UNet(nn.Module):
  """The U-Net of Fig. 1 (see the module docstring). Returns `(logits, ())`, logits at the
  input size. Parameters: `down_{i}` (ConvBlock, level i of the contracting path, i = D is the
  bottom), `upconv_{i}` (2x2 up-convolution into level i), `up_{i}` (ConvBlock of level i of
  the expanding path), `classifier` (the final 1x1 convolution)."""
  num_classes: int
  widths: Sequence[int] = (64, 128, 256, 512, 1024)
  padding: str = "valid"
  norm: bool = False
  dropout: float = 0.5
  pad_mode: str = "reflect"
  dtype: Optional[Dtype] = None
  aux_loss_weights: Tuple[float, ...] = ()
  output_losses: Tuple[Tuple[Tuple[str, float, Tuple], ...], ...] = ()

  @property
  def depth(self) -> int:
    return len(self.widths) - 1

  @nn.compact
  def network(self, x, train: bool = False):
    """The network itself on a tile it accepts: for "valid", a side s with
    `valid_output_size(s, D)` (else ValueError); for "same", multiples of 2^D. Output: the
    valid region (s - 2m per side) or the input size."""
    self._check_size(x.shape[1:3])
    block = lambda i, name: ConvBlock(self.widths[i], self.padding, self.norm,
                                      dtype=self.dtype, name=name)
    skips = []
    for i in range(self.depth + 1):
      if i:
        x = max_pool(x)
      x = block(i, f"down_{i}")(x, train)
      if self.dropout and i >= self.depth - 1:  # "at the end of the contracting path"
        x = Dropout(self.dropout)(x, deterministic=not train)
      skips.append(x)
    for i in reversed(range(self.depth)):
      x = nn.ConvTranspose(self.widths[i], (2, 2), strides=(2, 2), padding="VALID",
                           kernel_init=PAPER_INIT, dtype=self.dtype, name=f"upconv_{i}")(x)
      x = jnp.concatenate([center_crop(skips[i], x.shape[1:3]), x], axis=-1)
      x = block(i, f"up_{i}")(x, train)
    return layers.Conv(self.num_classes, (1, 1), kernel_init=PAPER_INIT, dtype=self.dtype,
                   name="classifier")(x)

  def __call__(self, images, train: bool = False):
    """Normalised NHWC images of any size -> (logits at that size, ())."""
    h, w = images.shape[1:3]
    if self.padding == "same":
      logits = self.network(pad_to_multiple(images, 2 ** self.depth, self.pad_mode), train)
      return logits[:, :h, :w], ()
    (out_h, margin), (out_w, _) = tile_geometry(h, self.depth), tile_geometry(w, self.depth)
    tile = jnp.pad(images, ((0, 0), (margin, margin + out_h - h),
                            (margin, margin + out_w - w), (0, 0)), mode=self.pad_mode)
    return self.network(tile, train)[:, :h, :w], ()

  def _check_size(self, hw) -> None:
    step = 2 ** self.depth
    for side in hw:
      if self.padding == "same":
        if side % step:
          raise ValueError(f"U-Net (padding='same', {self.depth} poolings): input sides must "
                           f"be multiples of {step}, got {tuple(hw)}")
      elif valid_output_size(side, self.depth) is None:
        below = [s for s in range(side - 1, 0, -1) if valid_output_size(s, self.depth)][:1]
        above = next(s for s in itertools.count(side + 1) if valid_output_size(s, self.depth))
        raise ValueError(
            f"U-Net (valid convolutions, {self.depth} poolings): input side {side} of "
            f"{tuple(hw)} leaves an odd-sized map before a 2x2 max-pool (or nothing); valid "
            f"tiles are 2^{self.depth} k - 4 with a positive output, e.g. "
            f"{' or '.join(str(s) for s in below + [above])}. UNet.__call__ mirror-pads any "
            "input to such a tile.")


def _check_common(widths, dropout, pad_mode, where: str = "model") -> Tuple[int, ...]:
  """Validates the fields U-Net and UNet++ share; returns widths as a tuple."""
  if (isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2
      or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in widths)):
    raise ConfigError(f"{where}.widths must be two or more positive channel counts, one per "
                      f"level (the paper's (64, 128, 256, 512, 1024)), got {widths!r}")
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ConfigError(f"{where}.dropout must be a rate in [0, 1), got {dropout!r}")
  if pad_mode not in PAD_MODES:
    raise ConfigError(f"{where}.pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
  return tuple(widths)


def output_loss_specs(loss, num_classes: int, where: str = "model.loss"):
  """A whole model's `loss` list (the format of a head's `loss`, segjax.losses.loss_spec) as
  LossSpecs; None = cross-entropy."""
  if loss is None:
    return losses.DEFAULT_LOSSES
  if isinstance(loss, str) or hasattr(loss, "keys") or not isinstance(loss, Sequence) or not loss:
    raise ConfigError(f"{where} must be a non-empty sequence of mappings like "
                      f"{{'name': 'cross_entropy', 'weight': 1.0}}, got {loss!r}")
  return tuple(losses.loss_spec(entry, f"{where}[{i}]", num_classes)
               for i, entry in enumerate(loss))


def warn_unused_parts(model_name: str, **parts) -> None:
  """A whole model ignores the keys of an encoder_decoder config (base_config()'s model, which
  tests/test_models.py's registry walk passes to every model); say so rather than fail."""
  unused = [name for name, value in parts.items() if value]
  if unused:
    logging.warning("model.%s: not used by %s (a whole model); ignored",
                    ", model.".join(unused), model_name)


def build_unet(num_classes: int, dtype: Any = None, widths=(64, 128, 256, 512, 1024),
               padding: str = "valid", norm: bool = False, dropout: float = 0.5,
               pad_mode: str = "reflect", loss=None, backbone=None, decode_head=None,
               neck=None, auxiliary_head=()) -> UNet:
  """config.model = {"name": "unet", "widths": ..., "padding": "valid" | "same", "norm",
  "dropout", "pad_mode", "loss": [{"name": ..., "weight": ...}, ...]}."""
  warn_unused_parts("unet", backbone=backbone, decode_head=decode_head, neck=neck,
                    auxiliary_head=auxiliary_head)
  widths = _check_common(widths, dropout, pad_mode)
  if padding not in PADDINGS:
    raise ConfigError(f"model.padding must be one of {PADDINGS} (the paper's unpadded "
                      f"convolutions, or zero-padded ones), got {padding!r}")
  return UNet(num_classes=num_classes, widths=widths, padding=padding, norm=bool(norm),
              dropout=float(dropout), pad_mode=pad_mode, dtype=dtype,
              output_losses=(output_loss_specs(loss, num_classes),))


MODELS.register("unet", build_unet)
