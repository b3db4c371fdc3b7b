"""The context module of Yu & Koltun, "Multi-Scale Context Aggregation by Dilated
Convolutions" (ICLR 2016), on their VGG-16 front end, and the `context_module` model.

Front end (paper §4; github.com/fyu/dilation network.py `build_frontend_vgg`): VGG-16 with
pool4 and pool5 removed and conv5 dilated by 2 (the backbone config), then

    conv5_3 -- fc6 (7x7, dilation 4, 4096) -- fc7 (1x1, 4096) -- final (1x1, C classes)

with ReLU and dropout 0.5 after fc6 and fc7 and `final` drawn from N(0, 0.001^2). Output
stride 8. fc6 keeps VGG's 7x7x512x4096 shape, so torchvision's classifier.0 fills it as is.

Context module (paper §3, Table 1; network.py `build_context`): the C class maps go through
seven 3x3 convs with dilations 1, 1, 2, 4, 8, 16, 1, each followed by ReLU, and a final 1x1
conv without one: a 67x67 receptive field on the stride-8 map at full resolution. The basic
module keeps C channels throughout (64 C^2 weights); the large one widens to 2C, 2C, 4C, 8C,
16C, 32C, 32C and back to C (the paper's Table 1, from memory of the paper: network.py builds
only the basic module). Names as network.py: ctx_conv1_1, ctx_conv1_2, ctx_conv2_1,
ctx_conv3_1, ctx_conv4_1, ctx_conv5_1, ctx_fc1, ctx_final.

Identity initialisation (§3; caffe-dilation's IdentityFiller, which network.py uses with
num_groups = C): the channels of each layer split into C groups, one per class; the centre
tap from input group g to output group g is C / c_out, every other weight is N(0, s^2) with
s = `init_noise` * C / c_out (network.py: std 0.01 for the basic module), biases 0. With
init_noise 0 the module computes max(x, 0) of its input exactly, so training starts from the
front end's predictions.

Departures, for cost: the reference convs of the front end are unpadded and the image is
reflection-padded by 186 pixels (a 500x500 image runs at 872x872, 3x the work); here every
conv is zero-padded to keep its size, so only pixels within the receptive field of the
border see different inputs. The logits' cells sit on pixels 8i + 3.5 (2x2 poolings); the
reference's upsampling, a fixed bilinear deconvolution (kernel 16, stride 8, pad 4), is
half-pixel bilinear interpolation of them, which AlignedEncoderDecoder computes (identical
away from the 4-pixel border, where the deconvolution fades to zero and this repeats the
edge cells).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.heads import fcn_skip_head
from segjax.models.registry import HEADS, MODELS

DILATIONS = (1, 1, 2, 4, 8, 16, 1)  # the seven 3x3 layers; an 8th, 1x1, closes the module
NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1",
         "ctx_conv5_1", "ctx_fc1", "ctx_final")
# Output channels of the seven 3x3 layers, in multiples of C (Table 1); the last is C.
WIDTHS = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32)}
VARIANTS = tuple(WIDTHS) + ("none",)  # none: the front end alone
# Dilation front end: pool4 and pool5 removed, conv5 dilated 2 (fc6: dilation 4).
FRONT_END_VGG16 = {"name": "vgg16", "pools": ((2, 2, 0), (2, 2, 0), (2, 2, 0), None, None),
                   "dilations": (1, 1, 1, 1, 2)}


def identity_init(num_classes: int, noise: float):
  """IdentityFiller with num_groups = num_classes (see the module docstring)."""
  def init(key, shape, dtype=jnp.float32):
    k, _, c_in, c_out = shape
    value = num_classes / c_out
    groups_in = np.arange(c_in) // (c_in // num_classes)
    groups_out = np.arange(c_out) // (c_out // num_classes)
    identity = np.zeros(shape, np.float32)  # 1 where the identity sets the weight
    identity[k // 2, k // 2] = groups_in[:, None] == groups_out[None, :]
    kernel = value * identity
    if noise:
      kernel = kernel + (1 - identity) * (noise * value) * jax.random.normal(key, shape)
    return jnp.asarray(kernel, dtype)
  return init


class ContextModule(nn.Module):
  """The basic or large context module on C = `num_classes` maps."""
  num_classes: int
  variant: str = "large"
  dilations: Sequence[int] = DILATIONS
  init_noise: float = 0.01
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    c = self.num_classes
    widths = [m * c for m in WIDTHS[self.variant]] + [c]
    for i, (width, name) in enumerate(zip(widths, NAMES)):
      last = i == len(widths) - 1
      d = 1 if last else int(self.dilations[i])
      k = 1 if last else 3
      x = layers.Conv(width, (k, k), padding=((d * (k // 2),) * 2,) * 2, kernel_dilation=d,
                  kernel_init=identity_init(c, self.init_noise), dtype=self.dtype, name=name)(x)
      if not last:
        x = nn.relu(x)
    return x


class ContextHead(nn.Module):
  """Front-end classifier (fc6, fc7, final) then the context module (`variant` basic or
  large; none: the front end alone)."""
  num_classes: int
  variant: str = "large"
  in_index: int = -1  # conv5_3 (stage 5 has no pooling)
  channels: int = 4096
  fc_kernel: int = 7
  dilation: int = 4
  dropout: float = 0.5
  init_noise: float = 0.01
  dtype: Optional[Any] = None

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ConfigError(f"model.decode_head.variant must be one of {VARIANTS}, got "
                        f"{self.variant!r}")
    super().__post_init__()

  def output_grid(self, grids: Sequence[fcn_skip_head.Grid]) -> fcn_skip_head.Grid:
    return grids[self.in_index]

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index)
    x = fcn_skip_head.fully_connected(x, self.channels, self.fc_kernel, self.dilation,
                                      self.dropout, train, self.dtype)
    x = layers.Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.001),
                dtype=self.dtype, name="final")(x)
    if self.variant == "none":
      return x
    return ContextModule(self.num_classes, self.variant, init_noise=self.init_noise,
                         dtype=self.dtype, name="context")(x)


HEADS.register("context_head", ContextHead)
MODELS.register("context_module",
                fcn_skip_head.aligned_model("context_head", FRONT_END_VGG16))
