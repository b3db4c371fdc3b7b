"""HRNetV2 (Sun et al. 2019, "High-Resolution Representations for Labeling Pixels and
Regions") as mmseg builds it: a stride-4 stem, then stages that keep every resolution they
have and add one lower one (transition), each stage a chain of HRModules in which parallel
branches of residual blocks exchange information (fuse): every output resolution sums all
branches, lower ones through a 1x1 conv + BN and bilinear upsampling, higher ones through
stride-2 3x3 convs. Returns the four branch maps (strides 4, 8, 16, 32); V2 heads resize and
concatenate them (input_transform "resize_concat").

The architecture is mmseg's `extra` spec: stage1..stage4, each with num_modules,
num_branches, block ("BASIC" | "BOTTLENECK"), num_blocks and num_channels per branch.
Submodule names follow mmseg's HRNet (`conv1`, `layer1_0`, `transition1_1_0_0`,
`stage2_0/branches_0_0/conv1`, `stage2_0/fuse_layers_0_1_0`), so mmseg and MSRA ImageNet
checkpoints convert by name.
"""
import functools
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.backbones.resnet import EXPANSION, Block
from segjax.models.registry import BACKBONES

BLOCKS = {"BASIC": "basic", "BOTTLENECK": "bottleneck"}


def _stage(num_modules, num_blocks, num_channels, block="BASIC"):
  """One stage of an `extra` spec (mmseg's dict; num_branches follows from the widths)."""
  return {"num_modules": num_modules, "num_branches": len(num_channels), "block": block,
          "num_blocks": tuple(num_blocks), "num_channels": tuple(num_channels)}


def hrnetv2_extra(width: int, small: bool = False) -> dict:
  """mmseg's HRNetV2-W{width} spec (configs/_base_/models/fcn_hr18.py; W18-Small halves the
  blocks and drops a module from stages 3 and 4, fcn_hr18s_*.py)."""
  c = (width, 2 * width, 4 * width, 8 * width)
  b = 2 if small else 4
  return {"stage1": _stage(1, (b,), (64,), "BOTTLENECK"),
          "stage2": _stage(1, (b,) * 2, c[:2]),
          "stage3": _stage(3 if small else 4, (b,) * 3, c[:3]),
          "stage4": _stage(2 if small else 3, (b,) * 4, c)}


def _conv_bn(x, features: int, kernel: int, stride: int, name: str, train: bool, dtype,
             relu: bool):
  """mmseg's nn.Sequential(conv, BN[, ReLU]) without a ConvModule: the conv is `{name}_0`
  and the norm `{name}_1`, the Sequential's indices."""
  p = kernel // 2
  x = layers.Conv(features, (kernel, kernel), strides=stride, padding=((p, p), (p, p)),
              use_bias=False, dtype=dtype, name=f"{name}_0")(x)
  x = layers.batch_norm(train, dtype, f"{name}_1")(x)
  return nn.relu(x) if relu else x


class HRModule(nn.Module):
  """Parallel branches of residual blocks, then the multi-resolution fusion."""
  block: str
  num_blocks: Sequence[int]
  num_channels: Sequence[int]
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, xs: Sequence[jnp.ndarray], train: bool) -> Tuple[jnp.ndarray, ...]:
    kind = BLOCKS[self.block]
    widths = [c * EXPANSION[kind] for c in self.num_channels]
    ys = []
    for i, x in enumerate(xs):
      for b in range(self.num_blocks[i]):
        x = Block(self.num_channels[i], kind, downsample=b == 0 and x.shape[-1] != widths[i],
                  dtype=self.dtype, name=f"branches_{i}_{b}")(x, train)
      ys.append(x)
    n = len(ys)
    if n == 1:
      return tuple(ys)

    outs = []
    for i in range(n):
      total = 0
      for j in range(n):
        name = f"fuse_layers_{i}_{j}"
        if j == i:
          y = ys[j]
        elif j > i:  # lower resolution: 1x1 to this width, upsample
          y = _conv_bn(ys[j], widths[i], 1, 1, name, train, self.dtype, relu=False)
          # mmseg's Upsample(scale_factor=2**(j-i)) to int(size * factor), then a resize to
          # the exact size: two bilinear resamplings wherever odd sizes were rounded up.
          factor = 2 ** (j - i)
          y = layers.resize_bilinear(y, (y.shape[1] * factor, y.shape[2] * factor))
          y = layers.resize_to(y, ys[i])
        else:  # higher resolution: i - j stride-2 3x3 convs, the last to this width, no ReLU
          y = ys[j]
          for k in range(i - j):
            last = k == i - j - 1
            y = _conv_bn(y, widths[i] if last else widths[j], 3, 2, f"{name}_{k}", train,
                         self.dtype, relu=not last)
        total = total + y
      outs.append(nn.relu(total))
    return tuple(outs)


def transition(ys, widths, name, train, dtype):
  """Existing branches change width by a 3x3 conv where needed; each new, lower branch comes
  from the lowest one by stride-2 3x3 convs (mmseg's _make_transition_layer). Called inside a
  compact module (HRNet, HRFormer), which owns the convs."""
  out = []
  for i, width in enumerate(widths):
    if i < len(ys):
      y = ys[i]
      if y.shape[-1] != width:
        y = _conv_bn(y, width, 3, 1, f"{name}_{i}", train, dtype, relu=True)
    else:
      y = ys[-1]
      steps = i + 1 - len(ys)
      for j in range(steps):
        y = _conv_bn(y, width if j == steps - 1 else ys[-1].shape[-1], 3, 2,
                     f"{name}_{i}_{j}", train, dtype, relu=True)
    out.append(y)
  return out


class HRNet(nn.Module):
  """mmseg's HRNet; `extra` is its stage spec (see `hrnetv2_extra`)."""
  extra: Optional[Mapping[str, Any]] = None  # None: HRNetV2-W18
  norm_eval: bool = False  # every BN uses its running statistics, also in training
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    extra = hrnetv2_extra(18) if self.extra is None else self.extra
    stages = [extra.get(f"stage{s}") for s in range(1, 5)]
    for s, cfg in enumerate(stages, 1):
      if cfg is None:
        raise ConfigError(f"HRNet extra needs stage1..stage4, stage{s} is missing")
      if not len(cfg["num_blocks"]) == len(cfg["num_channels"]) == cfg["num_branches"]:
        raise ConfigError(f"HRNet extra.stage{s}: num_blocks and num_channels need one entry "
                          f"per branch ({cfg['num_branches']})")
      if cfg["block"] not in BLOCKS:
        raise ConfigError(f"HRNet extra.stage{s}.block must be one of {sorted(BLOCKS)}, "
                          f"got {cfg['block']!r}")
    if stages[0]["num_branches"] != 1:
      raise ConfigError("HRNet extra.stage1 has one branch")
    train = train and not self.norm_eval

    # Stem: two stride-2 3x3 convs, always 64 wide.
    for i in (1, 2):
      x = layers.Conv(64, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False,
                  dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(layers.batch_norm(train, self.dtype, f"bn{i}")(x))

    # Stage 1: one branch of residual blocks at stride 4.
    kind = BLOCKS[stages[0]["block"]]
    planes = stages[0]["num_channels"][0]
    for b in range(stages[0]["num_blocks"][0]):
      x = Block(planes, kind, downsample=b == 0 and x.shape[-1] != planes * EXPANSION[kind],
                dtype=self.dtype, name=f"layer1_{b}")(x, train)
    ys = [x]

    for s, cfg in enumerate(stages[1:], 2):
      widths = [c * EXPANSION[BLOCKS[cfg["block"]]] for c in cfg["num_channels"]]
      ys = transition(ys, widths, f"transition{s - 1}", train, self.dtype)
      for m in range(cfg["num_modules"]):
        ys = HRModule(cfg["block"], tuple(cfg["num_blocks"]), tuple(cfg["num_channels"]),
                      dtype=self.dtype, name=f"stage{s}_{m}")(ys, train)
    return tuple(ys)


BACKBONES.register("hrnet", HRNet)
BACKBONES.register("hrnetv2_w18s", functools.partial(HRNet, extra=hrnetv2_extra(18, True)))
BACKBONES.register("hrnetv2_w18", functools.partial(HRNet, extra=hrnetv2_extra(18)))
BACKBONES.register("hrnetv2_w48", functools.partial(HRNet, extra=hrnetv2_extra(48)))
