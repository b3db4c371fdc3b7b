"""CGNet (Wu et al. 2020, "CGNet: A Light-weight Context Guided Network for Semantic
Segmentation") as mmseg 1.2.2 builds it: a three-conv stem and two stages of context guided
(CG) blocks, each stage's output concatenated with a downsampled copy of the image (input
injection) and the stage's first block:

    image -- stem: 3 x (3x3 conv + BN + PReLU), the first /2 (32) --+-- BN + PReLU -- out 1/2
      `-- avg pool 3x3/2 (inject_2x) ------------------------------+         |
    level1: CG block /2 (64), 2 more CG blocks --+-- concat -- BN + PReLU -- out 1/4 (131)
      first block's output ----------------------+      |
      image, avg pooled twice (inject_4x) -------------+
    level2: CG block /2 (128), 20 more CG blocks --+-- concat -- BN + PReLU -- out 1/8 (256)
      first block's output ------------------------+

A CG block (Fig. 3 of the paper):

    x -- conv1x1 (3x3/2 when downsampling) + BN + PReLU -- f_loc: depthwise 3x3 ---+
                                                    `-- f_sur: depthwise 3x3, dil d --+
         -- concat -- BN + PReLU [-- bottleneck 1x1 when downsampling]  (joint feature)
         -- f_glo: x sigmoid(fc(relu(fc(global avg pool))))  (global context)
         [+ x when not downsampling]

Every BatchNorm uses eps 1e-3 (mmseg's config); PReLUs are per channel. Returns the three
stage outputs. Submodule names follow mmseg's (`stem_0/conv`, `norm_prelu_0_0`,
`level1_0/f_loc`, `level2_3/f_glo/fc_0`), so mmseg checkpoints convert by name.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

BN_EPS = 1e-3


class ConvBNPReLU(nn.Module):
  """mmcv's ConvModule with PReLU: conv (no bias) -> BN -> PReLU, named conv/bn/activate."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    p = self.kernel_size // 2
    x = layers.Conv(self.features, (self.kernel_size,) * 2, strides=self.strides,
                    padding=((p, p), (p, p)), use_bias=False, dtype=self.dtype, name="conv")(x)
    x = layers.batch_norm(train, self.dtype, "bn", eps=BN_EPS)(x)
    return layers.PReLU(name="activate")(x)


class GlobalContextExtractor(nn.Module):
  """Squeeze-and-excitation: channel weights from the global average (fc_0, ReLU, fc_2,
  sigmoid)."""
  reduction: int = 16
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = jnp.mean(x, axis=(1, 2))
    y = nn.relu(layers.Dense(c // self.reduction, dtype=self.dtype, name="fc_0")(y))
    y = jax.nn.sigmoid(layers.Dense(c, dtype=self.dtype, name="fc_2")(y))
    return x * y[:, None, None, :]


class ContextGuidedBlock(nn.Module):
  features: int
  dilation: int = 2
  reduction: int = 16
  downsample: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    channels = self.features if self.downsample else self.features // 2
    out = ConvBNPReLU(channels, 3 if self.downsample else 1, 2 if self.downsample else 1,
                      self.dtype, name="conv1x1")(x, train)
    loc = layers.DepthwiseConv(3, use_bias=False, dtype=self.dtype, name="f_loc")(out)
    sur = layers.DepthwiseConv(3, dilation=self.dilation, use_bias=False, dtype=self.dtype,
                               name="f_sur")(out)
    joint = jnp.concatenate([loc, sur], axis=-1)
    joint = layers.batch_norm(train, self.dtype, "bn", eps=BN_EPS)(joint)
    joint = layers.PReLU(name="activate")(joint)
    if self.downsample:
      joint = layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                          name="bottleneck")(joint)
    out = GlobalContextExtractor(self.reduction, self.dtype, name="f_glo")(joint)
    return out if self.downsample else x + out


def input_injection(x: jax.Array, times: int) -> jax.Array:
  """The image average-pooled `times` times by 3x3/2 windows (padding 1, padded zeros
  counted, as torch's AvgPool2d), so each stage sees the raw image at its resolution."""
  for _ in range(times):
    x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
  return x


class CGNet(nn.Module):
  num_channels: Sequence[int] = (32, 64, 128)
  num_blocks: Sequence[int] = (3, 21)
  dilations: Sequence[int] = (2, 4)
  reductions: Sequence[int] = (8, 16)
  norm_eval: bool = False  # every BN uses its running statistics, also in training
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if len(self.num_channels) != 3 or len(self.num_blocks) != 2:
      raise ConfigError(f"CGNet needs 3 num_channels and 2 num_blocks, got "
                        f"{tuple(self.num_channels)} and {tuple(self.num_blocks)}")
    train = train and not self.norm_eval

    def norm_prelu(y, i):
      y = layers.batch_norm(train, self.dtype, f"norm_prelu_{i}_0", eps=BN_EPS)(y)
      return layers.PReLU(name=f"norm_prelu_{i}_1")(y)

    inp_2x, inp_4x = input_injection(x, 1), input_injection(x, 2)
    for i in range(3):
      x = ConvBNPReLU(self.num_channels[0], 3, 2 if i == 0 else 1, self.dtype,
                      name=f"stem_{i}")(x, train)
    x = norm_prelu(jnp.concatenate([x, inp_2x], axis=-1), 0)
    outs = [x]

    for level in (1, 2):
      for b in range(self.num_blocks[level - 1]):
        x = ContextGuidedBlock(self.num_channels[level], self.dilations[level - 1],
                               self.reductions[level - 1], downsample=b == 0, dtype=self.dtype,
                               name=f"level{level}_{b}")(x, train)
        if b == 0:
          down = x
      if level == 1:
        x = norm_prelu(jnp.concatenate([x, down, inp_4x], axis=-1), 1)
      else:
        x = norm_prelu(jnp.concatenate([down, x], axis=-1), 2)
      outs.append(x)
    return tuple(outs)


BACKBONES.register("cgnet", CGNet)
