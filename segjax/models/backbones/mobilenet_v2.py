"""MobileNetV2 (Sandler et al. 2018) as mmseg builds it for segmentation: a stride-2 3x3 stem,
then seven layers of inverted residual blocks (1x1 expansion, 3x3 depthwise carrying the
stride and dilation, linear 1x1 projection; the identity is added when the shape allows),
ReLU6 throughout. The segmentation configs dilate the last four layers (strides
1,2,2,1,1,1,1, dilations 1,1,1,2,2,4,4: output stride 8) and return layers 2, 3, 5 and 7
(out_indices 1,2,4,6: 24, 32, 96 and 320 channels at widen_factor 1).

Submodule names follow mmseg's (`conv1`, `layer2_0/conv_0`.. with ConvModule's `conv`/`bn`),
so mmseg and mmcls checkpoints convert by name.
"""
import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

# Per layer: expansion ratio, output channels (at widen_factor 1), blocks.
ARCH = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
  """The nearest multiple of `divisor` (at least `divisor`), rounded up if rounding lost
  more than 10%: the TF slim rule mmseg applies to widened channel counts."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < min_ratio * value else new


class InvertedResidual(nn.Module):
  """Expand (1x1, skipped at ratio 1) -> depthwise 3x3 -> project (1x1, no activation).

  mmseg's InvertedResidual, also Fast-SCNN's bottlenecks (ReLU instead of ReLU6, BatchNorm
  momentum 0.01)."""
  features: int
  expand_ratio: int
  stride: int = 1
  dilation: int = 1
  activation: Callable = nn.relu6
  bn_momentum: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    hidden = int(round(x.shape[-1] * self.expand_ratio))
    conv = functools.partial(layers.ConvBNAct, activation=self.activation,
                             bn_momentum=self.bn_momentum, dtype=self.dtype)
    y, i = x, 0
    if self.expand_ratio != 1:
      y = conv(hidden, 1, name="conv_0")(y, train)
      i = 1
    y = conv(hidden, 3, self.stride, self.dilation, groups=hidden, name=f"conv_{i}")(y, train)
    y = conv(self.features, 1, activation=None, name=f"conv_{i + 1}")(y, train)
    return x + y if self.stride == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  widen_factor: float = 1.0
  strides: Sequence[int] = (1, 2, 2, 2, 1, 2, 1)
  dilations: Sequence[int] = (1, 1, 1, 1, 1, 1, 1)
  out_indices: Sequence[int] = (1, 2, 4, 6)
  norm_eval: bool = False  # every BN uses its running statistics, also in training
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if not len(self.strides) == len(self.dilations) == len(ARCH):
      raise ConfigError(f"MobileNetV2 needs {len(ARCH)} strides and dilations, got "
                        f"{tuple(self.strides)} and {tuple(self.dilations)}")
    if any(i not in range(len(ARCH)) for i in self.out_indices):
      raise ConfigError(f"MobileNetV2 out_indices must lie in 0..{len(ARCH) - 1}, got "
                        f"{tuple(self.out_indices)}")
    train = train and not self.norm_eval
    x = layers.ConvBNAct(make_divisible(32 * self.widen_factor), 3, 2, activation=nn.relu6,
                         dtype=self.dtype, name="conv1")(x, train)
    outs = []
    for i, ((ratio, channels, blocks), stride, dilation) in enumerate(
        zip(ARCH, self.strides, self.dilations)):
      for b in range(blocks):  # only the first block strides and dilates
        x = InvertedResidual(make_divisible(channels * self.widen_factor), ratio,
                             stride if b == 0 else 1, dilation if b == 0 else 1,
                             dtype=self.dtype, name=f"layer{i + 1}_{b}")(x, train)
      if i in self.out_indices:
        outs.append(x)
    return tuple(outs)


BACKBONES.register("mobilenet_v2", MobileNetV2)
