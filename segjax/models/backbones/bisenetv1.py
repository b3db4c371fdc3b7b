"""BiSeNet V1 (Yu et al. 2018, "BiSeNet: Bilateral Segmentation Network for Real-time Semantic
Segmentation") as mmseg 1.2.2 builds it: two paths over the image, fused at 1/8.

    image -+- spatial path: 7x7/2, 3x3/2, 3x3/2, 1x1 (wide, shallow) -------- 1/8 --+
           |                                                                       FFM -> head
           +- context path: ResNet-18 -> 1/16, 1/32                                      |
                1/32 -ARM- + gap 1x1 - nearest x2 - 3x3 -+------------------ (1/16, aux) |
                1/16 -ARM--------------------------------+- nearest x2 - 3x3 - (1/8, aux)+

The attention refinement module (ARM) reweights a stage's channels by a sigmoid of its global
average; the feature fusion module (FFM) concatenates both paths, fuses them with a 1x1 conv
and adds a channel-attention copy of the result (mmseg: one 1x1 ConvBNAct + sigmoid, where the
paper draws two 1x1 convs without BN). Returns (fused 1/8 map, context 1/8, context 1/16): the
decode head reads the first, the two auxiliary heads the others.

The context path's backbone is any BACKBONES entry returning four stage maps (`backbone_cfg`);
mmseg's Cityscapes config uses its plain `ResNet` of depth 18, i.e. the 7x7-stem V1b
(`resnet18_v1b`), undilated. Submodule names follow mmseg's (`context_path/backbone/conv1`,
`context_path/arm16/atten_conv_layer_1`, `spatial_path/layer1`, `ffm/conv_atten_0`), so mmseg
checkpoints convert by name. STDC (stdc.py) reuses the ARM.
"""
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES


def global_average(x: jnp.ndarray) -> jnp.ndarray:
  """AdaptiveAvgPool2d((1, 1)) on NHWC: (B, 1, 1, C), broadcasting back against x."""
  return jnp.mean(x, axis=(1, 2), keepdims=True)


class AttentionRefinementModule(nn.Module):
  """3x3 ConvBNAct, then its channels scaled by sigmoid(BN(1x1 conv(global average)))."""
  features: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.ConvBNAct(self.features, 3, dtype=self.dtype, name="conv_layer")(x, train)
    attention = layers.ConvBNAct(self.features, 1, activation=None, dtype=self.dtype,
                                 name="atten_conv_layer_1")(global_average(x), train)
    return x * nn.sigmoid(attention)


class SpatialPath(nn.Module):
  """Three stride-2 ConvBNActs (7x7, 3x3, 3x3) and a 1x1 one: a 1/8 map rich in detail."""
  channels: Sequence[int] = (64, 64, 64, 128)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    for i, (features, kernel, stride) in enumerate(zip(self.channels, (7, 3, 3, 1),
                                                       (2, 2, 2, 1))):
      x = layers.ConvBNAct(features, kernel, stride, dtype=self.dtype,
                           name=f"layer{i + 1}")(x, train)
    return x


class ContextPath(nn.Module):
  """The backbone's 1/16 and 1/32 maps refined by ARMs and merged top-down (nearest upsampling
  and a 3x3 ConvBNAct per step), the 1/32 one with its global average added first.
  Returns (1/8 map, 1/16 map), `channels[0]` wide."""
  backbone_cfg: Mapping[str, Any]
  channels: Sequence[int] = (128, 256, 512)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    width = self.channels[0]
    backbone = BACKBONES.build(self.backbone_cfg, "model.backbone.backbone_cfg",
                               dtype=self.dtype, name="backbone")
    _, x_8, x_16, x_32 = backbone(x, train=train)
    x_gap = layers.ConvBNAct(width, 1, dtype=self.dtype,
                             name="gap_conv_1")(global_average(x_32), train)
    x_32 = AttentionRefinementModule(width, self.dtype, name="arm32")(x_32, train) + x_gap
    x_32_up = layers.ConvBNAct(width, 3, dtype=self.dtype, name="conv_head32")(
        layers.resize_nearest(x_32, x_16.shape[1:3]), train)
    x_16 = AttentionRefinementModule(width, self.dtype, name="arm16")(x_16, train) + x_32_up
    x_16_up = layers.ConvBNAct(width, 3, dtype=self.dtype, name="conv_head16")(
        layers.resize_nearest(x_16, x_8.shape[1:3]), train)
    return x_16_up, x_32_up


class FeatureFusionModule(nn.Module):
  """concat -> 1x1 ConvBNAct -> x + x * sigmoid(1x1 ConvBNAct(global average of x))."""
  features: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_spatial, x_context, train: bool):
    x = layers.ConvBNAct(self.features, 1, dtype=self.dtype, name="conv1")(
        jnp.concatenate([x_spatial, x_context], axis=-1), train)
    attention = layers.ConvBNAct(self.features, 1, dtype=self.dtype,
                                 name="conv_atten_0")(global_average(x), train)
    return x * nn.sigmoid(attention) + x


class BiSeNetV1(nn.Module):
  # The context path's backbone: four stage maps, the last three `context_channels` wide.
  backbone_cfg: Mapping[str, Any] = flax.core.FrozenDict({"name": "resnet18_v1b"})
  spatial_channels: Sequence[int] = (64, 64, 64, 128)
  context_channels: Sequence[int] = (128, 256, 512)
  out_channels: int = 256
  out_indices: Sequence[int] = (0, 1, 2)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if len(self.spatial_channels) != 4 or len(self.context_channels) != 3:
      raise ConfigError(f"BiSeNetV1 needs 4 spatial_channels and 3 context_channels, got "
                        f"{tuple(self.spatial_channels)} and {tuple(self.context_channels)}")
    x_context8, x_context16 = ContextPath(dict(self.backbone_cfg), self.context_channels,
                                          self.dtype, name="context_path")(x, train)
    x_spatial = SpatialPath(self.spatial_channels, self.dtype, name="spatial_path")(x, train)
    x_fuse = FeatureFusionModule(self.out_channels, self.dtype, name="ffm")(
        x_spatial, x_context8, train)
    outs = (x_fuse, x_context8, x_context16)
    return tuple(outs[i] for i in self.out_indices)


BACKBONES.register("bisenetv1", BiSeNetV1)
