"""VGG-16 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015), the encoder of the first fully convolutional segmentation models
(FCN, DeepLab v1, ParseNet, the dilation front end of Yu & Koltun).

    image -- conv1_1 conv1_2 -- pool1 -- conv2_1 conv2_2 -- pool2 -- conv3_1..3 -- pool3
          -- conv4_1..3 -- pool4 -- conv5_1..3 -- pool5

Thirteen 3x3 convs with ReLU in five stages, each stage closed by a max pooling. The
segmentation papers differ only in those poolings and in the dilation of the convs, so they
are configuration here, not classes:

  FCN (voc-fcn8s/net.py)           pools 2x2/2 everywhere (output stride 32)
  DeepLab v1 LargeFOV              pools 3x3/2 pad 1 in stages 1-3, 3x3/1 pad 1 in 4-5,
                                   conv5 dilation 2 (output stride 8)
  Dilation front end (fyu/dilation network.py)
                                   pool4 and pool5 removed, conv5 dilation 2 (stride 8)

Pooling is Caffe's (all of these models are Caffe models): `ceil_mode` sizes the output as
ceil((H + 2 pad - k) / s) + 1, dropping a last window that would start in the padding, and
windows ignore padded cells (PyTorch's MaxPool2d(ceil_mode=True) computes the same).
torchvision's ImageNet VGG pools in floor mode; the two agree whenever a stage's input size
is even, e.g. at 224x224. Convs are zero-padded to keep their input size ("same").

Each conv is a `layers.ConvBNAct` named with Caffe's layer name (`conv1_1` .. `conv5_3`,
submodules `conv` and, for `vgg16_bn`, `bn`), so torchvision's `vgg16` / `vgg16_bn` weights
convert by position (segjax/convert/torchvision_vgg.py). Returns the stage outputs chosen by
`out_indices` (after the stage's pooling, if it has one): by default stages 2-5, the
strides 4, 8, 16 and 32 every segjax backbone returns; FCN reads pool3, pool4 and pool5 of
them. `grids()` says where each returned map's cells sit on the input (see `grid`).
"""
import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

VGG16_DEPTHS = (2, 2, 3, 3, 3)  # convs per stage: 13 in all
VGG16_WIDTHS = (64, 128, 256, 512, 512)
POOL_2X2 = (2, 2, 0)  # (kernel, stride, pad): VGG's own pooling
Pool = Optional[Sequence[int]]


def conv_names(depths: Sequence[int] = VGG16_DEPTHS) -> Tuple[str, ...]:
  """Caffe's names of the convs, in order: conv1_1, conv1_2, conv2_1, ..., conv5_3."""
  return tuple(f"conv{s + 1}_{i + 1}" for s, n in enumerate(depths) for i in range(n))


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
  """Caffe's pooled size (ceil mode; floor mode is PyTorch's default)."""
  span = size + 2 * pad - kernel
  out = (-(-span // stride) if ceil_mode else span // stride) + 1
  if ceil_mode and pad and (out - 1) * stride >= size + pad:
    out -= 1  # Caffe's rule: the last window must start inside the image or the left pad
  return out


def max_pool(x: jax.Array, kernel: int, stride: int, pad: int, ceil_mode: bool) -> jax.Array:
  """Max pooling of NHWC `x` with padded cells ignored (-inf), sized as `pool_output_size`."""
  pads = []
  for size in x.shape[1:3]:
    out = pool_output_size(size, kernel, stride, pad, ceil_mode)
    pads.append((pad, max((out - 1) * stride + kernel - size - pad, 0)))
  return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=tuple(pads))


def grid(pools: Sequence[Pool], stage: int) -> Tuple[float, float]:
  """(stride, offset) of stage `stage`'s output: its cell i covers input pixels centred on
  stride * i + offset (pixel j's centre at j). Same-padded convs keep a map's grid; a pooling
  (k, s, p) maps cell j to the centre of the window s*j - p .. s*j - p + k - 1 below it.

  E.g. four 2x2/2 pools: (16, 7.5); DeepLab's 3x3/2 pad 1 pools: (8, 0). Models use this to
  put their logits back on the image pixel for pixel (fcn_skip_head.AlignedEncoderDecoder).
  """
  stride, offset = 1.0, 0.0
  for pool in pools[:stage + 1]:
    if pool is not None:
      k, s, p = pool
      offset += stride * (-p + (k - 1) / 2)
      stride *= s
  return stride, offset


class VGG(nn.Module):
  """VGG's conv stages; see the module docstring. `pools[s]` is stage s's pooling as
  (kernel, stride, pad) or None (no pooling), `dilations[s]` its convs' dilation."""
  depths: Sequence[int] = VGG16_DEPTHS
  widths: Sequence[int] = VGG16_WIDTHS
  pools: Sequence[Pool] = (POOL_2X2,) * 5
  dilations: Sequence[int] = (1, 1, 1, 1, 1)
  ceil_mode: bool = True
  norm: bool = False  # True: conv-BN-ReLU (vgg16_bn)
  out_indices: Sequence[int] = (1, 2, 3, 4)
  dtype: Optional[Any] = None

  def __post_init__(self):
    n = len(self.depths)
    for key in ("widths", "pools", "dilations"):
      if len(getattr(self, key)) != n:
        raise ConfigError(f"model.backbone.{key} needs one entry per stage ({n}), got "
                          f"{tuple(getattr(self, key))}")
    for s, pool in enumerate(self.pools):
      if pool is not None and (len(pool) != 3 or pool[0] < 1 or pool[1] < 1
                               or not 0 <= pool[2] < pool[0]):
        raise ConfigError(f"model.backbone.pools[{s}] must be (kernel, stride, pad) with "
                          f"0 <= pad < kernel, or None, got {pool}")
    if any(int(d) < 1 for d in self.dilations) or any(int(w) < 1 for w in self.widths):
      raise ConfigError(f"model.backbone: widths and dilations must be positive, got "
                        f"{tuple(self.widths)} and {tuple(self.dilations)}")
    if not self.out_indices or any(not 0 <= i < n for i in self.out_indices):
      raise ConfigError(f"model.backbone.out_indices must pick stages 0..{n - 1}, got "
                        f"{tuple(self.out_indices)}")
    super().__post_init__()

  def grids(self) -> Tuple[Tuple[float, float], ...]:
    """(stride, offset) on the input of each returned map (see `grid`)."""
    return tuple(grid(self.pools, i) for i in self.out_indices)

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    outs = []
    for s, (depth, width) in enumerate(zip(self.depths, self.widths)):
      for i in range(depth):
        x = layers.ConvBNAct(int(width), 3, dilation=int(self.dilations[s]), norm=self.norm,
                             dtype=self.dtype, name=f"conv{s + 1}_{i + 1}")(x, train)
      if self.pools[s] is not None:
        x = max_pool(x, *(int(v) for v in self.pools[s]), self.ceil_mode)
      outs.append(x)
    return tuple(outs[i] for i in self.out_indices)


BACKBONES.register("vgg", VGG)
BACKBONES.register("vgg16", functools.partial(VGG, depths=VGG16_DEPTHS))
BACKBONES.register("vgg16_bn", functools.partial(VGG, depths=VGG16_DEPTHS, norm=True))
