"""ParseNet's global context (Liu, Rabinovich & Berg, "ParseNet: Looking Wider to See Better",
ICLR 2016 workshop, arXiv:1506.04579), and the `parsenet` model.

    pool5 -- fc6 (3x3, rate 12, 1024) -- fc7 (1x1, 1024) --+-- L2 norm x scale (fc7_norm) ---+
                                                          `-- global average pool            |
                                                              -- L2 norm x scale (pool6_norm)|
                                                              -- unpool (repeat) ------------+
                                                                               concat -- score

The paper's Figure 1(e): the average feature of the whole image is appended to every
location ("early fusion"). The two feature sets differ much in scale, so
each is L2-normalised over channels at every location and multiplied by a learned
per-channel scale (initialised to 10: `scale_init`); the layer is the authors' Caffe `Normalize`
(github.com/weiliu89/caffe, branch fcn, normalize_layer.cpp: across_spatial false,
channel_shared false, x / sqrt(sum_c x^2 + 1e-10)).

The base network is the DeepLab-LargeFOV VGG-16 of largefov_head.py (output stride 8, fc6
3x3 at rate 12, 1024 channels); without pool5a by default, as a public re-implementation
of ParseNet (torchlake) builds it. Caveat: the authors' VOC prototxt (Caffe Model Zoo gist)
and the paper's full text could not be read here, so which layers get context, the scale
initialisation per layer and any dropout on the global feature follow the paper's summary
above, not a checked transcription; the scale init of 10 is taken from that
re-implementation. The 69.8 mIoU on VOC 2012 test is the paper's.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.heads import fcn_skip_head
from segjax.models.heads import largefov_head
from segjax.models.registry import HEADS, MODELS

CAFFE_NORMALIZE_EPS = 1e-10


def l2_normalize(x: jnp.ndarray, eps: float = CAFFE_NORMALIZE_EPS) -> jnp.ndarray:
  """Caffe Normalize (across_spatial false): each location's channel vector divided by
  sqrt(sum of squares + eps)."""
  x32 = x.astype(jnp.float32)
  return (x32 / jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


class Normalize(nn.Module):
  """L2 normalisation over channels times a learned per-channel `scale` (ParseNet §3.3)."""
  scale_init: float = 10.0

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(self.scale_init), (x.shape[-1],),
                       jnp.float32)
    return l2_normalize(x) * scale.astype(x.dtype)


class ParseNetHead(nn.Module):
  """fc6 -> fc7 -> [normalised fc7 | normalised global average of fc7] -> score."""
  num_classes: int
  in_index: int = -1  # pool5
  avg_pool: bool = False  # DeepLab's pool5a before fc6
  channels: int = 1024
  fc_kernel: int = 3
  dilation: int = 12
  dropout: float = 0.5
  scale_init: float = 10.0
  dtype: Optional[Any] = None

  def output_grid(self, grids: Sequence[fcn_skip_head.Grid]) -> fcn_skip_head.Grid:
    return grids[self.in_index]

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index)
    if self.avg_pool:
      x = largefov_head.avg_pool_3x3(x)
    x = fcn_skip_head.fully_connected(x, self.channels, self.fc_kernel, self.dilation,
                                      self.dropout, train, self.dtype)
    local = Normalize(self.scale_init, name="fc7_norm")(x)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
    context = Normalize(self.scale_init, name="pool6_norm")(pooled)  # pool6: the global pool
    x = jnp.concatenate([local, jnp.broadcast_to(context, local.shape)], axis=-1)
    return layers.Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01),
                   dtype=self.dtype, name="score")(x)


HEADS.register("parsenet_head", ParseNetHead)
MODELS.register("parsenet", fcn_skip_head.aligned_model("parsenet_head",
                                                        largefov_head.DEEPLAB_V1_VGG16))
