"""Fast-SCNN's classifier (Poudel et al. 2019; mmseg's DepthwiseSeparableFCNHead): FCNHead
with every conv depthwise separable, a 3x3 depthwise conv + BN (no activation, mmseg's
dw_act_cfg=None) then a 1x1 pointwise conv + BN + ReLU:

    fused map -- DSConv 3x3 -- DSConv 3x3 -- dropout -- 1x1 classifier

(the paper's "two depthwise separable convolutions and one pointwise convolution").
"""
from typing import Callable, Optional

import flax.linen as nn

from segjax.models import layers
from segjax.models.heads import fcn_head
from segjax.models.registry import HEADS


class DepthwiseSeparableFCNHead(fcn_head.FCNHead):
  channels: int = 128
  concat_input: bool = False
  dw_activation: Optional[Callable] = None

  def conv(self, name: str, dilation: int = 1) -> nn.Module:
    del dilation  # mmseg's separable convs are undilated
    return layers.SeparableConvBNAct(self.channels, self.kernel_size,
                                     depthwise_activation=self.dw_activation,
                                     bn_momentum=self.bn_momentum, dtype=self.dtype, name=name)


HEADS.register("sep_fcn_head", DepthwiseSeparableFCNHead)
