"""ICNet's three branches (Zhao et al. 2018, "ICNet for Real-Time Semantic Segmentation on
High-Resolution Images") as mmseg 1.2.2's ICNet backbone builds them around a dilated
ResNetV1c:

    image ------------------ conv_sub1: three 3x3/2 ConvBNActs (32, 32, 64) --------- sub1 1/8
      `- x1/2 -- stem, layer1, layer2 (ResNet) ---------- conv_sub2 1x1 (256) ------- sub2 1/16
                               `- x1/2 -- layer3, layer4 (dilated)
                                   -- PPM (1, 2, 3, 6) -- psp_bottleneck 3x3 (512)
                                   -- conv_sub4 1x1 (256) --------------------------- sub4 1/32

The two heavy branches share one ResNet (its stages run on the 1/2 and the 1/4 image), whose
stem max pool rounds up (ceil mode) as mmseg's ICNet sets it. The "x1/2" resizes are
PyTorch's `F.interpolate(scale_factor=0.5)`, which on an odd side samples with the factor,
not with the ratio of the sizes (`resize_by_half`). ICNeck (necks/ic_neck.py) fuses the three
maps.

Parameter names follow mmseg's (`backbone/backbone/layer1_0/...` for the ResNet,
`backbone/psp_modules_0_1`, `backbone/conv_sub1_0`), so mmseg checkpoints convert by name.
"""
import functools
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones import resnet
from segjax.models.heads.psp_head import pyramid_pooling
from segjax.models.registry import BACKBONES


def resize_by_half(x: jax.Array) -> jax.Array:
  """PyTorch's `F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)`
  on NHWC `x`: output floor(n / 2); output pixel i reads input 2i + 0.5 (the factor's
  half-pixel mapping). `layers.resize_bilinear` maps with n_in / n_out instead, which
  differs on odd sides (97 -> 48: 2.02 per pixel)."""
  b, h, w, c = x.shape
  return jax.image.scale_and_translate(
      x, (b, h // 2, w // 2, c), (1, 2), jnp.array([0.5, 0.5], jnp.float32),
      jnp.zeros((2,), jnp.float32), method="linear", antialias=False)


class ICNet(nn.Module):
  backbone: nn.Module  # a ResNet, named `backbone` like mmseg's ICNet.backbone
  light_branch_middle_channels: int = 32
  psp_out_channels: int = 512
  out_channels: Sequence[int] = (64, 256, 256)
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    conv = functools.partial(layers.ConvBNAct, dtype=self.dtype)
    mid = self.light_branch_middle_channels
    sub1 = x
    for i, features in enumerate((mid, mid, self.out_channels[0])):
      sub1 = conv(features, 3, 2, name=f"conv_sub1_{i}")(sub1, train)

    x = self.backbone(resize_by_half(x), train, last_stage=2)[-1]
    sub2 = conv(self.out_channels[1], 1, name="conv_sub2")(x, train)

    x = self.backbone(resize_by_half(x), train, first_stage=3)[-1]
    # mmseg concatenates the pooled maps first and the map itself last (PSPHead: the reverse).
    x = jnp.concatenate(
        pyramid_pooling(x, self.pool_scales, self.psp_out_channels, train, self.dtype) + [x],
        axis=-1)
    x = conv(self.psp_out_channels, 3, name="psp_bottleneck")(x, train)
    sub4 = conv(self.out_channels[2], 1, name="conv_sub4")(x, train)
    return sub1, sub2, sub4


def build_icnet(backbone_cfg: Optional[Mapping[str, Any]] = None,
                light_branch_middle_channels: int = 32, psp_out_channels: int = 512,
                out_channels: Sequence[int] = (64, 256, 256),
                pool_scales: Sequence[int] = (1, 2, 3, 6), dtype: Any = None) -> ICNet:
  """ICNet around the ResNet of `backbone_cfg` (a BACKBONES entry; default mmseg's dilated
  ResNetV1c-50, strides 1,2,1,1, dilations 1,1,2,4), its stem pool switched to ceil mode.
  mmseg's `layer_channels` (ResNet widths at layers 2 and 4) and `in_channels` follow from
  the ResNet here."""
  cfg = dict(backbone_cfg or {"name": "resnet50_v1c", "strides": (1, 2, 1, 1),
                              "dilations": (1, 1, 2, 4), "contract_dilation": True})
  net = BACKBONES.build({**cfg, "pool_ceil_mode": True}, "model.backbone.backbone_cfg",
                        dtype=dtype)
  if not isinstance(net, resnet.ResNet):
    raise ConfigError(f"model.backbone.backbone_cfg must name a ResNet, got "
                      f"{cfg.get('name')!r}")
  return ICNet(net, light_branch_middle_channels, psp_out_channels, tuple(out_channels),
               tuple(pool_scales), dtype=dtype)


BACKBONES.register("icnet", build_icnet)
