"""Fast-SCNN (Poudel et al. 2019, "Fast-SCNN: Fast Semantic Segmentation Network") as mmseg
1.2.2 builds it: a shared shallow "learning to downsample" path feeds both a high-resolution
skip and a deep low-resolution global feature extractor, fused once at 1/8:

    image -- learning_to_downsample: conv 3x3 /2 (32) -- DSConv /2 (48) -- DSConv /2 (64)
                 |                                                          (higher, 1/8)
                 +-- global_feature_extractor: bottlenecks 64 /2 x3 -- 96 /2 x3 -- 128 x3
                 |       -- PPM (1, 2, 3, 6) -- concat -- out conv 3x3 (128)  (lower, 1/32)
                 |                                                  |
    feature_fusion: higher -- 1x1 conv + BN --------------------+   |
                    lower -- upsample -- dw 3x3 + BN + ReLU -- 1x1 conv + BN -- + -- ReLU

Bottlenecks are MobileNetV2 inverted residuals with expansion 6 and ReLU; the DSConvs have no
activation after their depthwise half (mmseg's dw_act_cfg=None). mmseg's config uses
BatchNorm momentum 0.01 throughout (`bn_momentum`). Returns (higher, lower, fused), the
`out_indices` (0, 1, 2) the config's auxiliary heads read.

Submodule names follow mmseg's (`learning_to_downsample/dsconv1/depthwise_conv`,
`global_feature_extractor/bottleneck1_0/conv_0`, `.../ppm_0_1`, `feature_fusion/dwconv`), so
mmseg checkpoints convert by name.
"""
import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.mobilenet_v2 import InvertedResidual
from segjax.models.heads.psp_head import pyramid_pooling
from segjax.models.registry import BACKBONES


class LearningToDownsample(nn.Module):
  """Three stride-2 convs to 1/8: a plain 3x3 then two depthwise separable ones."""
  dw_channels: Sequence[int] = (32, 48)
  out_channels: int = 64
  bn_momentum: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.ConvBNAct(self.dw_channels[0], 3, 2, bn_momentum=self.bn_momentum,
                         dtype=self.dtype, name="conv")(x, train)
    sep = functools.partial(layers.SeparableConvBNAct, strides=2, depthwise_activation=None,
                            bn_momentum=self.bn_momentum, dtype=self.dtype)
    x = sep(self.dw_channels[1], name="dsconv1")(x, train)
    return sep(self.out_channels, name="dsconv2")(x, train)


class GlobalFeatureExtractor(nn.Module):
  """Three groups of inverted residual bottlenecks, then pyramid pooling and a 3x3 conv."""
  block_channels: Sequence[int] = (64, 96, 128)
  out_channels: int = 128
  expand_ratio: int = 6
  num_blocks: Sequence[int] = (3, 3, 3)
  strides: Sequence[int] = (2, 2, 1)
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  bn_momentum: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    for g, (channels, blocks, stride) in enumerate(zip(self.block_channels, self.num_blocks,
                                                       self.strides)):
      for b in range(blocks):  # only the first block of a group strides
        x = InvertedResidual(channels, self.expand_ratio, stride if b == 0 else 1,
                             activation=nn.relu, bn_momentum=self.bn_momentum, dtype=self.dtype,
                             name=f"bottleneck{g + 1}_{b}")(x, train)
    context = pyramid_pooling(x, self.pool_scales, x.shape[-1] // 4, train, self.dtype,
                              prefix="ppm", bn_momentum=self.bn_momentum)
    x = jnp.concatenate([x, *context], axis=-1)
    return layers.ConvBNAct(self.out_channels, 3, bn_momentum=self.bn_momentum,
                            dtype=self.dtype, name="out")(x, train)


class FeatureFusionModule(nn.Module):
  """The low-resolution map upsampled to the high-resolution one, each projected by a 1x1
  conv + BN (the low one after a depthwise 3x3), summed, then ReLU."""
  out_channels: int = 128
  bn_momentum: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, higher, lower, train: bool):
    conv = functools.partial(layers.ConvBNAct, self.out_channels, bn_momentum=self.bn_momentum,
                             dtype=self.dtype)
    lower = layers.resize_to(lower, higher)
    lower = conv(3, groups=self.out_channels, name="dwconv")(lower, train)
    lower = conv(1, activation=None, name="conv_lower_res")(lower, train)
    higher = conv(1, activation=None, name="conv_higher_res")(higher, train)
    return nn.relu(higher + lower)


class FastSCNN(nn.Module):
  downsample_dw_channels: Sequence[int] = (32, 48)
  global_in_channels: int = 64
  global_block_channels: Sequence[int] = (64, 96, 128)
  global_block_strides: Sequence[int] = (2, 2, 1)
  global_out_channels: int = 128
  fusion_out_channels: int = 128
  out_indices: Sequence[int] = (0, 1, 2)  # of (higher, lower, fused)
  bn_momentum: float = 0.1  # PyTorch's; mmseg's Fast-SCNN config: 0.01
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if any(i not in range(3) for i in self.out_indices):
      raise ConfigError(f"FastSCNN out_indices index (higher, lower, fused): 0..2, got "
                        f"{tuple(self.out_indices)}")
    kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
    higher = LearningToDownsample(self.downsample_dw_channels, self.global_in_channels, **kw,
                                  name="learning_to_downsample")(x, train)
    lower = GlobalFeatureExtractor(self.global_block_channels, self.global_out_channels,
                                   strides=self.global_block_strides, **kw,
                                   name="global_feature_extractor")(higher, train)
    fused = FeatureFusionModule(self.fusion_out_channels, **kw,
                                name="feature_fusion")(higher, lower, train)
    outs = (higher, lower, fused)
    return tuple(outs[i] for i in self.out_indices)


BACKBONES.register("fast_scnn", FastSCNN)
