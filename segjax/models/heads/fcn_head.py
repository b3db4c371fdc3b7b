"""FCN head (Long et al. 2015; mmseg's FCNHead): `num_convs` 3x3 ConvBNActs on one feature
map, optionally concatenated with the input and fused (`conv_cat`), then the classifier.

Subclasses (NLHead, CCHead) insert a context block after the first conv via `context`.
Also the usual auxiliary head for deep supervision (num_convs=1, concat_input=False, loss
weight 0.4 on the stage-3 map) and the first stage of OCRNet's cascade.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


class FCNHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1  # which backbone feature map(s) to read
  input_transform: Optional[str] = None
  channels: int = 256
  num_convs: int = 2
  kernel_size: int = 3
  dilation: int = 1
  concat_input: bool = True
  dropout: float = 0.1
  bn_momentum: float = 0.1  # PyTorch's (layers.batch_norm); Fast-SCNN's heads use 0.01
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = inputs = base.select_inputs(features, self.in_index, self.input_transform)
    for i in range(self.num_convs):
      x = self.conv(f"convs_{i}", self.dilation)(x, train)
      if i == 0:
        x = self.context(x, train)
    if self.concat_input:
      x = self.conv("conv_cat")(jnp.concatenate([inputs, x], axis=-1), train)
    return base.classify(x, self.outputs(), self.dropout, train, self.dtype)

  def outputs(self) -> int:
    """Channels of the classifier: the classes. STDC's detail head predicts edge / no edge."""
    return self.num_classes

  def conv(self, name: str, dilation: int = 1) -> nn.Module:
    """The head's conv unit: a k x k ConvBNAct here, a separable one in
    DepthwiseSeparableFCNHead (sep_fcn_head.py)."""
    return layers.ConvBNAct(self.channels, self.kernel_size, dilation=dilation,
                            bn_momentum=self.bn_momentum, dtype=self.dtype, name=name)

  def context(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Between the first and the second conv: nothing here. Context heads (non-local,
    criss-cross) subclass FCNHead and put their block here, as mmseg's do."""
    del train
    return x


HEADS.register("fcn_head", FCNHead)
