"""STDC (Fan et al. 2021, "Rethinking BiSeNet For Real-time Semantic Segmentation") as mmseg
1.2.2 builds it: STDCNet, and the BiSeNet-style context path on it (STDCContextPathNet).

STDCNet: two stride-2 3x3 ConvBNActs (1/2, 1/4), then three stages of STDC modules (1/8,
1/16, 1/32; STDC1: 2 modules per stage, STDC2: 4, 5, 3), the first of each at stride 2. A
short-term dense concatenate (STDC) module runs a chain of `num_convs` convs of shrinking width
(a 1x1 to out/2, then 3x3s to out/4, out/8, ..., the last as wide as the one before) and
concatenates every conv's output, so its receptive fields are multi-scale at little cost:

    x -- 1x1 (C/2) --+-- [3x3/2 depthwise, stride 2 only] -- 3x3 (C/4) -- 3x3 (C/8) -- 3x3 (C/8)
                     |                                           |             |            |
      [avg pool 3x3/2 at stride 2] ---------------------------- concat (C) ----------------+

Context path (the paper's Fig. 4): the 1/32 map's global average (1x1 ConvBNAct) is added to
the ARM-refined 1/32 map; that is upsampled (nearest) to 1/16 and smoothed by a 3x3 ConvBNAct,
added to the ARM-refined 1/16 map, upsampled to 1/8 and smoothed again. A feature fusion module
(FFM: 1x1 ConvBNAct of the concatenated 1/8 maps, plus itself scaled by a squeeze-excite
style attention of two 1x1 convs without BN) fuses the STDCNet 1/8 map with the context path's.
Returns (STDCNet 1/8 map, context 1/16, context 1/8, fused 1/8): the detail head (STDCHead)
reads the first, the auxiliary heads the two context maps, the decode head the last.

Submodule names follow mmseg's (`backbone/stages_2_0/layers_1`, `arms_0/atten_conv_layer_1`,
`convs_0`, `conv_avg`, `ffm/attention_1`), so mmseg checkpoints convert by name.
"""
import functools
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.bisenetv1 import AttentionRefinementModule, global_average
from segjax.models.registry import BACKBONES

# Per stage of STDC modules: the stride of each module.
ARCH = {"STDCNet1": ((2, 1), (2, 1), (2, 1)),
        "STDCNet2": ((2, 1, 1, 1), (2, 1, 1, 1, 1), (2, 1, 1))}


class STDCModule(nn.Module):
  """mmseg's STDCModule with fusion_type "cat" (what every STDC config uses)."""
  features: int
  stride: int = 1
  num_convs: int = 4
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    if self.num_convs < 2:
      raise ConfigError(f"an STDC module needs num_convs >= 2, got {self.num_convs}")
    half = self.features // 2
    x0 = layers.ConvBNAct(half, 1, dtype=self.dtype, name="layers_0")(x, train)
    y = x0
    if self.stride == 2:
      y = layers.ConvBNAct(half, 3, 2, groups=half, activation=None, dtype=self.dtype,
                           name="downsample")(y, train)
    outs = []
    for i in range(1, self.num_convs):
      width = self.features // 2 ** (i + 1 if i != self.num_convs - 1 else i)
      y = layers.ConvBNAct(width, 3, dtype=self.dtype, name=f"layers_{i}")(y, train)
      outs.append(y)
    if self.stride == 2:
      x0 = nn.avg_pool(x0, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                       count_include_pad=True)
    return jnp.concatenate([x0] + outs, axis=-1)


class STDCNet(nn.Module):
  stdc_type: str = "STDCNet1"
  channels: Sequence[int] = (32, 64, 256, 512, 1024)
  bottleneck_type: str = "cat"
  num_convs: int = 4
  with_final_conv: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    if self.stdc_type not in ARCH:
      raise ConfigError(f"stdc_type must be one of {sorted(ARCH)}, got {self.stdc_type!r}")
    if self.bottleneck_type != "cat":
      raise ConfigError(f"STDCNet: only bottleneck_type 'cat' (every mmseg STDC config's) is "
                        f"implemented, got {self.bottleneck_type!r}")
    if len(self.channels) != 5:
      raise ConfigError(f"STDCNet needs 5 channels (2 stem convs, 3 stages), got "
                        f"{tuple(self.channels)}")
    for i in range(2):
      x = layers.ConvBNAct(self.channels[i], 3, 2, dtype=self.dtype, name=f"stages_{i}")(
          x, train)
    outs = []
    for s, strides in enumerate(ARCH[self.stdc_type], start=2):
      for j, stride in enumerate(strides):
        x = STDCModule(self.channels[s], stride, self.num_convs, self.dtype,
                       name=f"stages_{s}_{j}")(x, train)
      outs.append(x)
    if self.with_final_conv:
      outs[-1] = layers.ConvBNAct(max(1024, self.channels[-1]), 1, dtype=self.dtype,
                                  name="final_conv")(outs[-1], train)
    return tuple(outs)


class FeatureFusionModule(nn.Module):
  """STDC's FFM: x = 1x1 ConvBNAct(concat); x + x * sigmoid(1x1 (no BN, no bias) -> ReLU ->
  1x1 (no BN, no bias) of x's global average), the middle `features / scale_factor` wide."""
  features: int = 256
  scale_factor: int = 4
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, spatial, context, train: bool):
    x = layers.ConvBNAct(self.features, 1, dtype=self.dtype, name="conv0")(
        jnp.concatenate([spatial, context], axis=-1), train)
    conv = functools.partial(layers.ConvBNAct, kernel_size=1, norm=False, use_bias=False,
                             dtype=self.dtype)
    attention = conv(self.features // self.scale_factor, name="attention_1")(
        global_average(x), train)
    attention = conv(self.features, activation=None, name="attention_2")(attention, train)
    return x * nn.sigmoid(attention) + x


class STDCContextPathNet(nn.Module):
  # The STDCNet (any BACKBONES entry returning the 1/8, 1/16 and 1/32 maps).
  backbone_cfg: Mapping[str, Any] = flax.core.FrozenDict({"name": "stdcnet"})
  out_channels: int = 128
  ffm_channels: int = 256  # mmseg's ffm_cfg out_channels (its in_channels follow from the maps)
  ffm_scale_factor: int = 4
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    outs = BACKBONES.build(dict(self.backbone_cfg), "model.backbone.backbone_cfg",
                           dtype=self.dtype, name="backbone")(x, train=train)
    if len(outs) != 3:
      raise ConfigError(f"STDCContextPathNet needs a backbone with 3 outputs (1/8, 1/16, "
                        f"1/32), got {len(outs)}")
    feature_up = layers.ConvBNAct(self.out_channels, 1, dtype=self.dtype,
                                  name="conv_avg")(global_average(outs[-1]), train)
    arms_out = []
    for i in range(2):  # 1/32 then 1/16
      x_arm = AttentionRefinementModule(self.out_channels, self.dtype, name=f"arms_{i}")(
          outs[2 - i], train) + feature_up
      feature_up = layers.resize_nearest(x_arm, outs[1 - i].shape[1:3])
      feature_up = layers.ConvBNAct(self.out_channels, 3, dtype=self.dtype,
                                    name=f"convs_{i}")(feature_up, train)
      arms_out.append(feature_up)
    feat_fuse = FeatureFusionModule(self.ffm_channels, self.ffm_scale_factor, self.dtype,
                                    name="ffm")(outs[0], arms_out[1], train)
    return (outs[0], *arms_out, feat_fuse)


BACKBONES.register("stdcnet", STDCNet)
BACKBONES.register("stdc_context_path", STDCContextPathNet)
