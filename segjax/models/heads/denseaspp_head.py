"""DenseASPP's head (Yang et al., "DenseASPP for Semantic Segmentation in Street Scenes", CVPR
2018), as the official code builds it (github.com/DeepMotionAIResearch/DenseASPP
models/DenseASPP.py), and the `denseaspp` model.

Atrous convolutions at rates 3, 6, 12, 18, 24 in a dense chain: each branch sees the
concatenation of the input and of every earlier branch's output, so the later (wider) rates
build on the earlier ones and the receptive fields cover the scales densely:

    x ------------------------------------------------------------------+
    +-- ASPP_3  ([x])                        -- 128 -------------------+ |
    +-- ASPP_6  ([ASPP_3, x])                -- 128 -----------------+ | |
    +-- ASPP_12 ([ASPP_6, ASPP_3, x])        -- 128 ---------------+ | | |
    +-- ASPP_18 (...)                        -- 128 -------------+ | | | |
    +-- ASPP_24 (...)                        -- 128 -----------+ | | | | |
                                                               concat (newest first)
                                                                 -- dropout -- 1x1 classifier

    ASPP_d(y) = dropout2d(conv3x3_d(ReLU(BN(conv1x1(ReLU(BN(y)))))))    (convs with bias)

The first branch has no leading BN (`bn_start=False`: in the official model the DenseNet
features end with a BatchNorm, norm5). Widths are the DenseNet-161 model's: a 512-channel
1x1 bottleneck (`channels`, d_feature0) and 128 channels per branch (`branch_channels`,
d_feature1); dropout 0.1 after every branch (dropout0) and before the classifier (dropout1).
The head's BatchNorms keep running statistics with PyTorch momentum 0.0003 (flax 0.9997), as
the official blocks do; convolutions start from Kaiming-uniform (the official init). The
official classifier also upsamples x8 inside the model; segjax's losses and evaluation
resize the stride-8 logits instead. Names follow the official modules (`ASPP_3/conv_1`,
`norm_2`, ...; `conv_seg` is `classification.1`).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import segmentor
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS, MODELS

BN_MOMENTUM = 1.0 - 0.0003  # the official `bn(..., momentum=0.0003)`, in flax's convention


class DenseASPPBlock(nn.Module):
  """The official _DenseAsppBlock: [BN] ReLU 1x1 (`channels`) BN ReLU 3x3 at `dilation`
  (`features`), then channel dropout."""
  channels: int
  features: int
  dilation: int
  bn_start: bool = True
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5,
                          dtype=self.dtype, name=name)

    d = self.dilation
    if self.bn_start:
      x = bn("norm_1")(x)
    x = layers.Conv(self.channels, (1, 1), kernel_init=nn.initializers.he_uniform(),
                dtype=self.dtype, name="conv_1")(nn.relu(x))
    x = layers.Conv(self.features, (3, 3), padding=((d, d), (d, d)), kernel_dilation=d,
                kernel_init=nn.initializers.he_uniform(), dtype=self.dtype,
                name="conv_2")(nn.relu(bn("norm_2")(x)))
    return nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)


class DenseASPPHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512  # d_feature0: each branch's 1x1 bottleneck
  branch_channels: int = 128  # d_feature1: each branch's output
  dilations: Sequence[int] = (3, 6, 12, 18, 24)
  branch_dropout: float = 0.1  # dropout0
  dropout: float = 0.1  # dropout1, before the classifier
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    for i, d in enumerate(self.dilations):
      y = DenseASPPBlock(self.channels, self.branch_channels, d, bn_start=i > 0,
                         dropout=self.branch_dropout, dtype=self.dtype, name=f"ASPP_{d}")(x, train)
      x = jnp.concatenate([y, x], axis=-1)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("denseaspp_head", DenseASPPHead)
MODELS.register("denseaspp", segmentor.encoder_decoder_with("denseaspp_head"))
