"""RefineNet (Lin et al., "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017), 4-cascaded on a ResNet, as its official code builds it;
and the `refinenet` model (EncoderDecoder with this head on an undilated ResNet).

Four RefineNet blocks walk the ResNet stages from 1/32 up to 1/4. Each adapts its stage with
residual conv units, fuses it with the previous block's output, gathers context with chained
residual pooling and refines the result once more:

    stage k -- 3x3 dimred -- RCU x2 --+-- 3x3 conv --+
                                      |              +-- sum -- ReLU -- CRP -- RCU x3 -- to k-1
    block k+1 -- 3x3 conv -- upsample (to stage k's size) --+

    RCU(x) = x + conv3x3(ReLU(conv3x3(ReLU(x))))     (no BatchNorm; first conv with bias)
    CRP(x) = x + p_1 + p_2 + p_3 + p_4,   p_i = conv3x3(maxpool 5x5, stride 1 (p_i-1)),  p_0 = x

RefineNet-4 (on stage 4) has no second input and is 512 wide (2 x `channels`), the others
256. After RefineNet-1 (1/4 of the input): dropout 0.5 and a 3x3 classifier; stages 3 and 4
also pass through dropout 0.5 on their way in (the code drops maps wider than 512).

Which version: the CVPR paper draws two pooling blocks per CRP and two RCUs before the
classifier; the official code (github.com/guosheng/refinenet main/gen_net_opts_model_type1.m:
chained_pool_num 4, adapt_conv_num 2, refine_block_conv_num_mainflow 3, lossgroup_conv_num 0)
and its released models (ported to PyTorch in DrSleep/refinenet-pytorch models/resnet.py, whose
module names are used here) have four pooling blocks, three output RCUs per block and no
extra RCU before the classifier; this file follows the code. Each CRP pools then convolves,
as in the released Cityscapes / VOC models; the official training code's "improved" pooling
convolves first (`crp_conv_first=True`). New convolutions start from N(0, 0.01) (the code's
filler). Upsampling is bilinear with align_corners=True (the PyTorch port; the MATLAB code
uses imresize, bicubic).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers, segmentor
from segjax.models.layers import resize_align_corners
from segjax.models.registry import HEADS, MODELS


def _conv3x3(features: int, name: str, use_bias: bool = False, dtype=None) -> layers.Conv:
  return layers.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=use_bias,
                 kernel_init=nn.initializers.normal(0.01), dtype=dtype, name=name)


class RCUBlock(nn.Module):
  """`num_blocks` residual conv units in a chain (the port's RCUBlock, n_stages 2): convs
  `{i}_conv` (with bias) and `{i}_conv_relu_varout_dimred` (without)."""
  features: int
  num_blocks: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    for i in range(1, self.num_blocks + 1):
      y = _conv3x3(self.features, f"{i}_conv", True, self.dtype)(nn.relu(x))
      x = x + _conv3x3(self.features, f"{i}_conv_relu_varout_dimred", dtype=self.dtype)(
          nn.relu(y))
    return x


class CRPBlock(nn.Module):
  """Chained residual pooling: each stage pools (5x5, stride 1) and convolves the previous
  stage's output (`{i}_outvar_dimred`), and every stage is added to the input."""
  features: int
  num_stages: int
  conv_first: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    top = x
    pool = lambda y: nn.max_pool(y, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))  # noqa
    for i in range(1, self.num_stages + 1):
      conv = _conv3x3(self.features, f"{i}_outvar_dimred", dtype=self.dtype)
      top = pool(conv(top)) if self.conv_first else conv(pool(top))
      x = x + top
    return x


class RefineNetHead(nn.Module):
  num_classes: int
  in_index: Sequence[int] = (0, 1, 2, 3)  # the four stages, shallow to deep
  channels: int = 256  # RefineNet-3..1; RefineNet-4 is twice as wide
  adapt_rcus: int = 2
  crp_stages: int = 4
  output_rcus: int = 3
  crp_conv_first: bool = False
  dropout: float = 0.5
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)  # noqa: E731
    dt, prev = self.dtype, None
    # g = 1 is RefineNet-4 on the deepest stage (the official code's group numbering).
    for g, i in enumerate(reversed(tuple(self.in_index)), start=1):
      width = 2 * self.channels if g == 1 else self.channels
      x = drop(features[i]) if g <= 2 else features[i]
      x = _conv3x3(width, f"p_ims1d2_outl{g}_dimred", dtype=dt)(x)
      x = RCUBlock(width, self.adapt_rcus, dt, name=f"adapt_stage{g}_b")(x)
      if prev is not None:  # multi-resolution fusion: a 3x3 conv per input, upsample, sum
        x = _conv3x3(width, f"adapt_stage{g}_b2_joint_varout_dimred", dtype=dt)(x)
        x = x + resize_align_corners(prev, x.shape[1:3])
      x = CRPBlock(width, self.crp_stages, self.crp_conv_first, dt,
                   name=f"mflow_conv_g{g}_pool")(nn.relu(x))
      x = RCUBlock(width, self.output_rcus, dt, name=f"mflow_conv_g{g}_b")(x)
      if g < len(self.in_index):  # the next fusion's conv of this input, at this size
        x = _conv3x3(self.channels, f"mflow_conv_g{g}_b3_joint_varout_dimred", dtype=dt)(x)
      prev = x
    return layers.Conv(self.num_classes, (3, 3), padding=((1, 1), (1, 1)),
                   kernel_init=nn.initializers.normal(0.01), dtype=dt,
                   name="clf_conv")(drop(prev))


HEADS.register("refinenet_head", RefineNetHead)
MODELS.register("refinenet", segmentor.encoder_decoder_with("refinenet_head"))
