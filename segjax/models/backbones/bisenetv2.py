"""BiSeNet V2 (Yu et al. 2021, "BiSeNet V2: Bilateral Network with Guided Aggregation for
Real-time Semantic Segmentation") as mmseg 1.2.2 builds it.

    image -+- detail branch: 3 stages of 3x3 ConvBNActs (64, 64, 128), each starting at
           |  stride 2: wide and shallow, 1/8 ------------------------------------+
           |                                                                      BGA -> head
           +- semantic branch: stem (1/4, 16) - GE x2 (1/8, 32) - GE x2 (1/16, 64) |
              - GE x4 (1/32, 128) - context embedding (1/32, 128) -----------------+
              (the stem and the three GE stages also feed the auxiliary heads)

Gather-and-expand (GE) layers: a 3x3 ConvBNAct, a 3x3 grouped conv expanding each channel
6-fold (at stride 2: a linear strided one, then a depthwise 3x3), a linear 1x1 projection, and
the input added back (at stride 2 through a linear separable conv). The context embedding adds
a 1x1 ConvBNAct of the map's BN-normalised global average to the map, then a 3x3 ConvBNAct
(the paper's last conv has no BN/ReLU; mmseg's has both). Bilateral guided aggregation (BGA)
lets each branch gate the other: detail (separable conv) x sigmoid(upsampled semantic 3x3),
plus strided detail (3x3/2 + avg pool) x sigmoid(semantic separable conv), upsampled; the sum
goes through a 3x3 ConvBNAct. Returns (BGA map, stem, stage 2, stage 3, stage 4 maps).

Submodule names follow mmseg's (`detail/detail_branch_0_0`, `semantic/stage1/conv_first`,
`semantic/stage2_0/shortcut_0/depthwise_conv`, `semantic/stage4_CEBlock/gap_1`,
`bga/detail_down_0`), so mmseg checkpoints convert by name.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.bisenetv1 import global_average
from segjax.models.registry import BACKBONES


class DetailBranch(nn.Module):
  """Per stage: a stride-2 3x3 ConvBNAct and one (first stage) or two more at stride 1."""
  channels: Sequence[int] = (64, 64, 128)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    for i, features in enumerate(self.channels):
      for j in range(2 if i == 0 else 3):
        x = layers.ConvBNAct(features, 3, 2 if j == 0 else 1, dtype=self.dtype,
                             name=f"detail_branch_{i}_{j}")(x, train)
    return x


class StemBlock(nn.Module):
  """3x3/2 ConvBNAct, then two halves concatenated and fused by a 3x3 ConvBNAct: a 1x1 +
  3x3/2 bottleneck and a 3x3/2 max pool. Output 1/4."""
  features: int = 16
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    def conv(features, kernel, stride, name):
      return layers.ConvBNAct(features, kernel, stride, dtype=self.dtype, name=name)
    x = conv(self.features, 3, 2, "conv_first")(x, train)
    left = conv(self.features // 2, 1, 1, "convs_0")(x, train)
    left = conv(self.features, 3, 2, "convs_1")(left, train)
    right = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return conv(self.features, 3, 1, "fuse_last")(jnp.concatenate([left, right], -1), train)


class GELayer(nn.Module):
  """Gather-and-expand layer (see the module docstring); stride 1 or 2."""
  features: int
  expansion: int = 6
  stride: int = 1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    cin = x.shape[-1]
    mid = cin * self.expansion
    y = layers.ConvBNAct(cin, 3, dtype=self.dtype, name="conv1")(x, train)
    if self.stride == 1:
      y = layers.ConvBNAct(mid, 3, groups=cin, dtype=self.dtype, name="dwconv_0")(y, train)
      shortcut = x
    else:
      y = layers.ConvBNAct(mid, 3, self.stride, groups=cin, activation=None, dtype=self.dtype,
                           name="dwconv_0")(y, train)
      y = layers.ConvBNAct(mid, 3, groups=mid, dtype=self.dtype, name="dwconv_1")(y, train)
      shortcut = layers.SeparableConvBNAct(
          self.features, 3, strides=self.stride, depthwise_activation=None,
          pointwise_activation=None, dtype=self.dtype, name="shortcut_0")(x, train)
    y = layers.ConvBNAct(self.features, 1, activation=None, dtype=self.dtype,
                         name="conv2_0")(y, train)
    return nn.relu(y + shortcut)


class CEBlock(nn.Module):
  """Context embedding: x + ConvBNAct1x1(BN(global average of x)), then a 3x3 ConvBNAct."""
  features: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    context = layers.batch_norm(train, self.dtype, "gap_1")(global_average(x))
    context = layers.ConvBNAct(self.features, 1, dtype=self.dtype,
                               name="conv_gap")(context, train)
    return layers.ConvBNAct(self.features, 3, dtype=self.dtype,
                            name="conv_last")(x + context, train)


class SemanticBranch(nn.Module):
  """Stem, GE stages (2, 2, 4 layers, each starting at stride 2) and the context embedding.
  Returns every stage's output."""
  channels: Sequence[int] = (16, 32, 64, 128)
  expansion: int = 6
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = StemBlock(self.channels[0], self.dtype, name="stage1")(x, train)
    outs = [x]
    for i, features in enumerate(self.channels[1:], start=2):
      for j in range(4 if i == len(self.channels) else 2):
        x = GELayer(features, self.expansion, 2 if j == 0 else 1, self.dtype,
                    name=f"stage{i}_{j}")(x, train)
      outs.append(x)
    outs.append(CEBlock(self.channels[-1], self.dtype,
                        name=f"stage{len(self.channels)}_CEBlock")(x, train))
    return outs


class BGALayer(nn.Module):
  """Bilateral guided aggregation of the 1/8 detail and 1/32 semantic maps (both `features`
  wide) into one 1/8 map."""
  features: int = 128
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_d, x_s, train: bool):
    f, dtype = self.features, self.dtype
    def separable(name):  # BN after the depthwise conv only, no activation
      return layers.SeparableConvBNAct(f, 3, depthwise_activation=None, pointwise_norm=False,
                                       pointwise_activation=None, dtype=dtype, name=name)
    detail_dwconv = separable("detail_dwconv_0")(x_d, train)
    detail_down = layers.ConvBNAct(f, 3, 2, activation=None, dtype=dtype,
                                   name="detail_down_0")(x_d, train)
    detail_down = nn.avg_pool(detail_down, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                              count_include_pad=True)
    semantic_conv = layers.ConvBNAct(f, 3, activation=None, dtype=dtype,
                                     name="semantic_conv_0")(x_s, train)
    semantic_dwconv = separable("semantic_dwconv_0")(x_s, train)
    fuse_1 = detail_dwconv * nn.sigmoid(layers.resize_to(semantic_conv, detail_dwconv))
    fuse_2 = layers.resize_to(detail_down * nn.sigmoid(semantic_dwconv), fuse_1)
    return layers.ConvBNAct(f, 3, dtype=dtype, name="conv")(fuse_1 + fuse_2, train)


class BiSeNetV2(nn.Module):
  detail_channels: Sequence[int] = (64, 64, 128)
  semantic_channels: Sequence[int] = (16, 32, 64, 128)
  semantic_expansion_ratio: int = 6
  bga_channels: int = 128
  out_indices: Sequence[int] = (0, 1, 2, 3, 4)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if len(self.semantic_channels) < 2:
      raise ConfigError(f"BiSeNetV2 needs a stem and at least one GE stage, got "
                        f"semantic_channels {tuple(self.semantic_channels)}")
    if not self.detail_channels[-1] == self.semantic_channels[-1] == self.bga_channels:
      raise ConfigError(f"BiSeNetV2's guided aggregation needs detail_channels[-1] == "
                        f"semantic_channels[-1] == bga_channels, got {self.detail_channels[-1]}, "
                        f"{self.semantic_channels[-1]}, {self.bga_channels}")
    x_detail = DetailBranch(self.detail_channels, self.dtype, name="detail")(x, train)
    semantic = SemanticBranch(self.semantic_channels, self.semantic_expansion_ratio,
                              self.dtype, name="semantic")(x, train)
    x_head = BGALayer(self.bga_channels, self.dtype, name="bga")(x_detail, semantic[-1], train)
    outs = (x_head, *semantic[:-1])
    return tuple(outs[i] for i in self.out_indices)


BACKBONES.register("bisenetv2", BiSeNetV2)
