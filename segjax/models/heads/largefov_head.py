"""DeepLab v1's LargeFOV classifier (Chen, Papandreou, Kokkinos, Murphy & Yuille, "Semantic
Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs", ICLR 2015), and
the `deeplab_v1` model: DeepLab-LargeFOV without its CRF post-processing.

    VGG-16, pools 3x3/2 pad 1 (1-3) and 3x3/1 pad 1 (4-5), conv5 dilated 2  (output stride 8)
    pool5 -- pool5a (avg 3x3/1 pad 1) -- fc6 (3x3, rate 12, 1024) -- fc7 (1x1, 1024) -- fc8

ReLU and dropout 0.5 follow fc6 and fc7; fc8 starts from N(0, 0.01^2), zero bias. fc6 and fc7
are smaller than VGG's (paper §4.1: fc6's 7x7 taps subsampled to 3x3 at rate 12, "LargeFOV",
and 1024 channels instead of 4096): 20.5M parameters in all (the paper's Table 2; 20,505,429
with 21 classes). segjax.convert.torchvision_vgg fills them from VGG's fc6 / fc7 by that
subsampling (taps 0, 3, 6; every 4th channel: the channel choice is the converter's).
pool5a, the average pooling before fc6, is in the released train.prototxt as transcribed by
public re-implementations (the prototxt itself could not be read here); `avg_pool=False`
drops it.

The logits' cells sit on input pixels 8i (`output_grid`; 321x321 crops give 41x41 cells).
The reference upsamples them by 8 with its Interp layer (bilinear, corners aligned), which on
its 8k + 1 inputs (321, 513) is linear interpolation between cells at 8i; `deeplab_v1`
(fcn_skip_head.AlignedEncoderDecoder) does exactly that at any input size. The reference
trains on labels subsampled to the cells instead; segjax's loss reads the upsampled logits
at every labelled pixel (mmseg's way).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.heads import fcn_skip_head
from segjax.models.registry import HEADS, MODELS

# DeepLab v1's VGG-16: Caffe pools 3x3 with pad 1, stride 2 in stages 1-3 and 1 in 4-5.
DEEPLAB_V1_VGG16 = {"name": "vgg16", "pools": ((3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 1, 1),
                                               (3, 1, 1)),
                    "dilations": (1, 1, 1, 1, 2)}


def avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
  """Caffe's AVE pooling 3x3/1 pad 1: padded zeros count (the divisor is always 9)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=True)


class LargeFOVHead(nn.Module):
  """pool5a -> fc6 (atrous) -> fc7 -> fc8; see the module docstring."""
  num_classes: int
  in_index: int = -1  # pool5
  avg_pool: bool = True  # pool5a
  channels: int = 1024
  fc_kernel: int = 3
  dilation: int = 12
  dropout: float = 0.5
  dtype: Optional[Any] = None

  def output_grid(self, grids: Sequence[fcn_skip_head.Grid]) -> fcn_skip_head.Grid:
    """Same-padded convs and a 3x3/1 pooling keep the input map's grid."""
    return grids[self.in_index]

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index)
    if self.avg_pool:
      x = avg_pool_3x3(x)
    x = fcn_skip_head.fully_connected(x, self.channels, self.fc_kernel, self.dilation,
                                      self.dropout, train, self.dtype)
    return layers.Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01),
                   dtype=self.dtype, name="fc8")(x)


HEADS.register("largefov_head", LargeFOVHead)
MODELS.register("deeplab_v1", fcn_skip_head.aligned_model("largefov_head", DEEPLAB_V1_VGG16))
