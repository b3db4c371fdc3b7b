"""DDRNet-23 and DDRNet-23-slim (Hong et al. 2021, "Deep Dual-resolution Networks for
Real-time and Accurate Semantic Segmentation of Road Scenes") as mmseg 1.2.2 builds them: after
a shared stem, a high-resolution "spatial" branch stays at 1/8 while a "context" branch halves
its resolution each stage, and the two exchange features twice (bilateral fusion):

    image -- stem: 3x3/2, 3x3/2 (c), 2 basic blocks, 2 basic blocks /2 (2c) --------- 1/8
             |                                                        |
    stage 3  context: 2 basic /2 (4c, 1/16)                    spatial: 2 basic (2c, 1/8)
             context += down_1(spatial)           spatial += up(compression_1(context))
             |                                        (this spatial map: the aux input)
    stage 4  context: 2 basic /2 (8c, 1/32)                    spatial: 2 basic (2c)
             context += down_2(spatial)           spatial += up(compression_2(context))
             |                                                        |
    stage 5  context: bottleneck /2 (16c, 1/64)            spatial: bottleneck (4c)
             -- DAPPM (ppm_channels -> 4c) -- up ---------------------(+)----------- out 1/8

Every branch input passes a ReLU (a layer's last block leaves it to its consumers); down_1 is
one 3x3/2 conv + BN, down_2 two (ReLU between), compression_i a 1x1 conv + BN, "up" bilinear.
c = 32 (slim) or 64. Returns (stage-3 spatial map, out): mmseg returns the first only in
training, as the input of its DDRHead's auxiliary classifier; segjax always returns it (unused
at test time, so XLA drops that classifier there).

DAPPM, the deep aggregation pyramid pooling module, on the 1/64 map x (each unit BN -> ReLU ->
conv, mmcv's pre-activation ConvModule, layers.BNActConv):

    y0 = 1x1(x);  y_i = 3x3(up(1x1(pool_i(x))) + y_{i-1}),  i = 1..4
    pool_i: avg 5/2, 9/4, 17/8 (padding 2, 4, 8, zeros counted), global average
    out = 1x1(concat(y0..y4)) + 1x1(x)

mmseg resizes the fused maps to (H // 8, W // 8) and so runs only on sides divisible by 8
(elsewhere its in-place additions fail); segjax resizes to the spatial branch's map, which is
the same size there and any size elsewhere.

The residual blocks are mmseg.models.utils' BasicBlock / Bottleneck (expansion 2), which
PIDNet (pidnet.py) shares. Submodule names follow mmseg's (`stem_2_0/conv1/conv`,
`context_branch_layers_0_0/downsample_0`, `spp/scales_1_1/bn`, `down_2_1`), so mmseg
checkpoints convert by name.
"""
import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

EXPANSION = {"basic": 1, "bottleneck": 2}


class Block(nn.Module):
  """mmseg.models.utils' BasicBlock (3x3 with the stride, 3x3) or Bottleneck (1x1, 3x3 with
  the stride, 1x1 to 2 x planes), each conv a ConvModule (`conv1/conv`, `conv1/bn`), plus the
  shortcut, then a ReLU only where `out_relu` (mmseg's act_cfg_out).

  downsample: the shortcut's projection, None (identity), "sequential" (DDRNet's nn.Sequential
  of a 1x1 conv and a BN: `downsample_0`, `downsample_1`) or "conv_module" (PIDNet's
  ConvModule: `downsample/conv`, `downsample/bn`)."""
  planes: int
  kind: str = "basic"
  strides: int = 1
  out_relu: bool = True
  downsample: Optional[str] = None
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(layers.ConvBNAct, dtype=self.dtype)
    out_features = self.planes * EXPANSION[self.kind]
    if self.kind == "basic":
      y = conv(self.planes, 3, self.strides, name="conv1")(x, train)
      y = conv(self.planes, 3, activation=None, name="conv2")(y, train)
    else:
      y = conv(self.planes, 1, name="conv1")(x, train)
      y = conv(self.planes, 3, self.strides, name="conv2")(y, train)
      y = conv(out_features, 1, activation=None, name="conv3")(y, train)
    if self.downsample == "sequential":
      x = layers.Conv(out_features, (1, 1), strides=self.strides, use_bias=False,
                      dtype=self.dtype, name="downsample_0")(x)
      x = layers.batch_norm(train, self.dtype, "downsample_1")(x)
    elif self.downsample == "conv_module":
      x = conv(out_features, 1, self.strides, activation=None, name="downsample")(x, train)
    elif self.downsample is not None:
      raise ValueError(f"downsample must be None, 'sequential' or 'conv_module', got "
                       f"{self.downsample!r}")
    y = y + x
    return nn.relu(y) if self.out_relu else y


def residual_layer(x: jnp.ndarray, kind: str, planes: int, num_blocks: int, name: str,
                   train: bool, strides: int = 1, downsample: str = "sequential",
                   dtype: Any = None) -> jnp.ndarray:
  """mmseg's `_make_layer` (DDRNet's and PIDNet's): `num_blocks` blocks named `{name}_{b}`,
  the first with the stride and, where the shape changes, the shortcut projection. The first
  block keeps its class's output ReLU (BasicBlock: yes, Bottleneck: no), the others have one
  except the last. Call it inside a compact method: the blocks become its module's children."""
  for b in range(num_blocks):
    stride = strides if b == 0 else 1
    project = b == 0 and (stride != 1 or x.shape[-1] != planes * EXPANSION[kind])
    out_relu = kind == "basic" if b == 0 else b < num_blocks - 1
    x = Block(planes, kind, stride, out_relu, downsample if project else None, dtype=dtype,
              name=f"{name}_{b}")(x, train)
  return x


def pool_branch(x: jnp.ndarray, kernel: Optional[int], stride: int = 1,
                padding: int = 0) -> jnp.ndarray:
  """A pyramid branch's pooled view: torch's AvgPool2d(kernel, stride, padding) (padded zeros
  counted, floor mode), or with kernel None the global average (AdaptiveAvgPool2d(1))."""
  if kernel is None:
    return jnp.mean(x, axis=(1, 2), keepdims=True)
  return nn.avg_pool(x, (kernel, kernel), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)), count_include_pad=True)


class DAPPM(nn.Module):
  """DDRNet's deep aggregation pyramid pooling module (see the module docstring).
  Names: `scales_0`, `scales_{i}_1` (after the pool, mmseg's Sequential index 1),
  `processes_{i-1}`, `compression`, `shortcut`."""
  branch_channels: int = 128
  out_channels: int = 128
  kernel_sizes: Sequence[int] = (5, 9, 17)
  strides: Sequence[int] = (2, 4, 8)
  paddings: Sequence[int] = (2, 4, 8)
  dtype: Optional[Any] = None

  def unit(self, features: int, kernel_size: int, name: str, groups: int = 1) -> nn.Module:
    return layers.BNActConv(features, kernel_size, groups, dtype=self.dtype, name=name)

  def pyramid(self, x: jnp.ndarray, train: bool) -> Tuple[jnp.ndarray, ...]:
    """(scales_0(x), the pooled branches projected and upsampled to x's size)."""
    pools = [(k, s, p) for k, s, p in zip(self.kernel_sizes, self.strides, self.paddings)]
    pools.append((None, 1, 0))
    ups = [layers.resize_to(
        self.unit(self.branch_channels, 1, f"scales_{i + 1}_1")(pool_branch(x, *pool), train), x)
        for i, pool in enumerate(pools)]
    return self.unit(self.branch_channels, 1, "scales_0")(x, train), ups

  @nn.compact
  def __call__(self, x, train: bool):
    y, ups = self.pyramid(x, train)
    feats = [y]
    for i, up in enumerate(ups):  # each branch refines the previous one's output
      feats.append(self.unit(self.branch_channels, 3, f"processes_{i}")(up + feats[-1], train))
    return (self.unit(self.out_channels, 1, "compression")(jnp.concatenate(feats, -1), train)
            + self.unit(self.out_channels, 1, "shortcut")(x, train))


def stem(x: jnp.ndarray, channels: int, num_blocks: int, train: bool, downsample: str,
         dtype: Any = None) -> jnp.ndarray:
  """DDRNet's and PIDNet's stem to 1/8 and 2c channels: two 3x3/2 ConvBNActs (`stem_0`,
  `stem_1`), `num_blocks` basic blocks (`stem_2_*`), ReLU, as many basic blocks /2 (`stem_4_*`),
  ReLU (mmseg's Sequential indices 3 and 5)."""
  conv = functools.partial(layers.ConvBNAct, channels, 3, 2, dtype=dtype)
  x = conv(name="stem_0")(x, train)
  x = conv(name="stem_1")(x, train)
  x = nn.relu(residual_layer(x, "basic", channels, num_blocks, "stem_2", train,
                             downsample=downsample, dtype=dtype))
  return nn.relu(residual_layer(x, "basic", 2 * channels, num_blocks, "stem_4", train,
                                strides=2, downsample=downsample, dtype=dtype))


class DDRNet(nn.Module):
  channels: int = 32  # c: 32 for DDRNet-23-slim, 64 for DDRNet-23
  ppm_channels: int = 128
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray, jnp.ndarray]:
    if self.channels < 1 or self.ppm_channels < 1:
      raise ConfigError(f"DDRNet channels and ppm_channels must be positive, got "
                        f"{self.channels}, {self.ppm_channels}")
    c, relu = self.channels, nn.relu
    layer = functools.partial(residual_layer, train=train, dtype=self.dtype)

    def conv(features, kernel_size, name, strides=1, activation=None):
      return layers.ConvBNAct(features, kernel_size, strides, activation=activation,
                              dtype=self.dtype, name=name)

    x = stem(x, c, 2, train, "sequential", self.dtype)

    # Stage 3 and the first bilateral fusion.
    x_c = layer(x, "basic", 4 * c, 2, "context_branch_layers_0", strides=2)
    x_s = layer(x, "basic", 2 * c, 2, "spatial_branch_layers_0")
    x_c, x_s = (x_c + conv(4 * c, 3, "down_1", 2)(relu(x_s), train),
                x_s + layers.resize_to(conv(2 * c, 1, "compression_1")(relu(x_c), train), x_s))
    stage3 = x_s

    # Stage 4 and the second bilateral fusion.
    x_c = layer(relu(x_c), "basic", 8 * c, 2, "context_branch_layers_1", strides=2)
    x_s = layer(relu(x_s), "basic", 2 * c, 2, "spatial_branch_layers_1")
    down = conv(4 * c, 3, "down_2_0", 2, nn.relu)(relu(x_s), train)
    x_c, x_s = (x_c + conv(8 * c, 3, "down_2_1", 2)(down, train),
                x_s + layers.resize_to(conv(2 * c, 1, "compression_2")(relu(x_c), train), x_s))

    # Stage 5: one bottleneck per branch, DAPPM on the context, their sum.
    x_s = layer(relu(x_s), "bottleneck", 2 * c, 1, "spatial_branch_layers_2")
    x_c = layer(relu(x_c), "bottleneck", 8 * c, 1, "context_branch_layers_2", strides=2)
    x_c = DAPPM(self.ppm_channels, 4 * c, dtype=self.dtype, name="spp")(x_c, train)
    return stage3, x_s + layers.resize_to(x_c, x_s)


BACKBONES.register("ddrnet", DDRNet)
