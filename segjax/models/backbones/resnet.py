"""ResNet (He et al. 2016) as mmseg builds it for segmentation: V1b (torchvision's: 7x7 stem,
stride in the 3x3 conv) and V1c (three 3x3 stem convs), depths 18/50/101, with per-stage
`strides` and `dilations` for output stride 8 (strides 1,2,1,1 / dilations 1,1,2,4, the
"D8" models) or 16, `contract_dilation` (first block of a dilated stage at half the
dilation), DeepLabv3's `multi_grid` (the last stage's per-block dilations), `frozen_stages`
and `norm_eval`. Returns the four stage maps (strides 4, 8, 16, 32 undilated).

Submodule names follow mmseg's ResNet (`stem_0`.. or `conv1`/`bn1`, `layer1_0/conv1`,
`layer1_0/downsample_0`), so mmseg, torchvision and open-mmlab checkpoints convert by name.
"""
import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

# depth -> (block, blocks per stage)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3))}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _conv(features, kernel, stride=1, dilation=1, name=None, dtype=None):
  p = dilation * (kernel // 2)
  return layers.Conv(features, (kernel, kernel), strides=stride, padding=((p, p), (p, p)),
                 kernel_dilation=dilation, use_bias=False, dtype=dtype, name=name)


class Block(nn.Module):
  """BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride and dilation, 1x1 x4)."""
  planes: int
  kind: str
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: layers.batch_norm(train, self.dtype, name)  # noqa: E731
    out_features = self.planes * EXPANSION[self.kind]
    if self.kind == "basic":
      y = nn.relu(bn("bn1")(_conv(self.planes, 3, self.stride, self.dilation, "conv1",
                                  self.dtype)(x)))
      y = bn("bn2")(_conv(self.planes, 3, name="conv2", dtype=self.dtype)(y))
    else:
      y = nn.relu(bn("bn1")(_conv(self.planes, 1, name="conv1", dtype=self.dtype)(x)))
      y = nn.relu(bn("bn2")(_conv(self.planes, 3, self.stride, self.dilation, "conv2",
                                  self.dtype)(y)))
      y = bn("bn3")(_conv(out_features, 1, name="conv3", dtype=self.dtype)(y))
    if self.downsample:
      x = bn("downsample_1")(_conv(out_features, 1, self.stride, name="downsample_0",
                                   dtype=self.dtype)(x))
    return nn.relu(y + x)


class ResNet(nn.Module):
  depth: int = 50
  deep_stem: bool = True  # V1c; False = V1b
  stem_channels: int = 64
  base_channels: int = 64
  strides: Sequence[int] = (1, 2, 2, 2)
  dilations: Sequence[int] = (1, 1, 1, 1)
  contract_dilation: bool = False
  multi_grid: Optional[Sequence[int]] = None
  # Stem (0) and stages 1..frozen_stages: no gradient, BN statistics frozen. Weight decay
  # would still shrink them: freeze their updates too with optim.lr_mults
  # (("^backbone/(stem|conv1|bn1|layer1_)", 0.0), ...).
  frozen_stages: int = -1
  norm_eval: bool = False  # every BN uses its running statistics, also in training
  # The stem's 3x3/2 max pool rounds its output size up (torch's ceil_mode=True), as ICNet
  # sets it "to keep information in the corner of feature map".
  pool_ceil_mode: bool = False
  # train.remat: "none" | "block" | "full", each block recomputed in the backward pass
  # (layers.REMAT_POLICIES); set by segjax.models.build_model from config.train.remat.
  remat: str = "none"
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False, first_stage: int = 1,
               last_stage: int = 4) -> Tuple[jnp.ndarray, ...]:
    """The maps of stages `first_stage`..`last_stage` (1-based; the stem runs only from stage
    1). A model that works between stages (ICNet resizes between stages 2 and 3) calls the
    module once per part; the parameters are the same whatever the split."""
    if self.depth not in DEPTHS:
      raise ConfigError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {self.depth}")
    kind, blocks = DEPTHS[self.depth]
    if self.multi_grid is not None and len(self.multi_grid) != blocks[3]:
      raise ConfigError(f"multi_grid needs one dilation per block of the last stage "
                        f"({blocks[3]}), got {tuple(self.multi_grid)}")

    def stage_train(stage):  # BN statistics frozen in frozen stages and under norm_eval
      return train and not self.norm_eval and stage > self.frozen_stages

    def freeze(stage, y):
      return jax.lax.stop_gradient(y) if stage <= self.frozen_stages else y

    if first_stage == 1:
      x = freeze(0, self.stem(x, stage_train(0)))

    outs = []
    block_cls = layers.remat(Block, self.remat)
    in_features = x.shape[-1]
    for s, (num_blocks, stride, dilation) in enumerate(zip(blocks, self.strides,
                                                             self.dilations)):
      if not first_stage <= s + 1 <= last_stage:
        continue
      planes = self.base_channels * 2 ** s
      grid = self.multi_grid if s == 3 else None
      if grid is not None:
        block_dilations = tuple(grid)
      else:
        first = dilation // 2 if dilation > 1 and self.contract_dilation else dilation
        block_dilations = (first,) + (dilation,) * (num_blocks - 1)
      for b in range(num_blocks):
        x = block_cls(
            planes, kind, stride if b == 0 else 1, block_dilations[b],
            downsample=b == 0 and (stride != 1 or in_features != planes * EXPANSION[kind]),
            dtype=self.dtype, name=f"layer{s + 1}_{b}")(x, stage_train(s + 1))
        in_features = planes * EXPANSION[kind]
      x = freeze(s + 1, x)
      outs.append(x)
    return tuple(outs)

  def stem(self, x, train: bool):
    """V1c's three 3x3 convs or V1b's 7x7, then the 3x3/2 max pool: stride 4."""
    if self.deep_stem:
      half = self.stem_channels // 2
      for i, (features, stride) in enumerate(((half, 2), (half, 1), (self.stem_channels, 1))):
        x = _conv(features, 3, stride, name=f"stem_{3 * i}", dtype=self.dtype)(x)
        x = nn.relu(layers.batch_norm(train, self.dtype, f"stem_{3 * i + 1}")(x))
    else:
      x = _conv(self.stem_channels, 7, 2, name="conv1", dtype=self.dtype)(x)
      x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
    return stem_pool(x, self.pool_ceil_mode)


def stem_pool(x: jnp.ndarray, ceil_mode: bool = False) -> jnp.ndarray:
  """torch's MaxPool2d(3, stride=2, padding=1, ceil_mode) on NHWC `x`. Ceil mode rounds the
  output size up, n // 2 + 1 instead of (n - 1) // 2 + 1: an even side gets one more padded
  row or column, which never wins the max."""
  pad = tuple((1, 2 - n % 2) if ceil_mode else (1, 1) for n in x.shape[1:3])
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=pad)


BACKBONES.register("resnet", ResNet)
for _depth in (18, 50, 101):
  for _deep, _style in ((False, "v1b"), (True, "v1c")):
    BACKBONES.register(f"resnet{_depth}_{_style}",
                       functools.partial(ResNet, depth=_depth, deep_stem=_deep))
