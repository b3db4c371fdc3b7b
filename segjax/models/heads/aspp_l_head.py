"""DeepLab v2's ASPP-L head (Chen et al., "DeepLab: Semantic Image Segmentation with Deep
Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017), the classifier
of its ResNet-101 model.

Four parallel 3x3 convolutions at rates 6, 12, 18, 24 map the stride-8 features straight to
class scores, and the four score maps are summed (the official prototxt's fc1_*_c0..c3 and an
Eltwise SUM; kazuto1011/deeplab-pytorch's `_ASPP`):

    x --+-- conv 3x3, rate 6  --+
        +-- conv 3x3, rate 12 --+-- sum --> logits
        +-- conv 3x3, rate 18 --+
        +-- conv 3x3, rate 24 --+

Unlike DeepLabv3's ASPP (aspp_head.py) there is no BatchNorm, image pooling, 1x1 branch or
fusing conv: each branch is a classifier of its own field of view. Weights start from
N(0, 0.01), biases from 0 (the prototxt's gaussian filler, kazuto's init); names `c0`..`c3`
are kazuto's. The whole model (multi-scale inputs, max fusion) is segjax/models/deeplab_v2.py.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class ASPPLHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  dilations: Sequence[int] = (6, 12, 18, 24)
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    del train  # no BatchNorm, no dropout
    x = base.select_inputs(features, self.in_index, self.input_transform)
    logits = None
    for i, d in enumerate(self.dilations):
      y = layers.Conv(self.num_classes, (3, 3), padding=((d, d), (d, d)), kernel_dilation=d,
                  kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, name=f"c{i}")(x)
      logits = y if logits is None else logits + y
    return logits


HEADS.register("aspp_l_head", ASPPLHead)
