"""DeepLab v2 (Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
Atrous Convolution, and Fully Connected CRFs", TPAMI 2017): a dilated ResNet-101 with the
ASPP-L head (heads/aspp_l_head.py), run on the image at several scales with shared weights,
the score maps fused by a pixel-wise max (the paper's multi-scale inputs, "MSC"):

    image ---------------> backbone + ASPP-L --> s_1    (1/8) -----------------------+
    image x 0.75 --------> backbone + ASPP-L --> s_0.75 -- bilinear to s_1's size ---+-- max
    image x 0.5  --------> backbone + ASPP-L --> s_0.5  -- bilinear to s_1's size ---+

The paper trains on every scale's scores and on the fused ones (the official train
prototxt's four SoftmaxWithLoss layers, weight 1 each; kazuto1011/deeplab-pytorch's MSC and
train loop), so the model returns `(fused, (s_1, s_0.75, s_0.5))` with aux_loss_weights
(1, 1, 1), and evaluation predicts with the fused scores. The scaled images are bilinear
resizes to floor(s * H) x floor(s * W) (half-pixel centres, kazuto's F.interpolate); the
fused map has the size of the largest scale's output. Departure: segjax's losses resize each
output bilinearly to the labels, where the official code shrinks the labels to each output's
size by nearest neighbour.

`deeplab_v2` (MODELS) takes encoder_decoder's config plus `scales`; the decode head defaults
to aspp_l_head. It subclasses EncoderDecoder, so parameters keep its names (`backbone/...`,
`decode_head/c0`): ImageNet encoders convert and lr multipliers match as for any other model.
"""
from typing import Any, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError
from segjax.models import layers, segmentor
from segjax.models.registry import MODELS


class DeepLabV2(segmentor.EncoderDecoder):
  """EncoderDecoder applied at each of `scales` (one set of weights); max-fused logits."""
  scales: Tuple[float, ...] = (1.0, 0.75, 0.5)

  def __call__(self, images: jnp.ndarray, train: bool = False):
    h, w = images.shape[1:3]
    outputs = []
    for s in self.scales:
      x = images if s == 1.0 else layers.resize_bilinear(images, (int(h * s), int(w * s)))
      logits, _ = super().__call__(x, train=train)
      outputs.append(logits)
    size = outputs[int(np.argmax(self.scales))].shape[1:3]
    fused = layers.resize_bilinear(outputs[0], size)
    for logits in outputs[1:]:
      fused = jnp.maximum(fused, layers.resize_bilinear(logits, size))
    return fused, tuple(outputs)


def build_deeplab_v2(num_classes: int, backbone, decode_head=None, neck=None,
                     auxiliary_head=(), scales: Sequence[float] = (1.0, 0.75, 0.5),
                     dtype: Any = None) -> DeepLabV2:
  """encoder_decoder's config with `decode_head` defaulting to aspp_l_head, plus `scales`."""
  if auxiliary_head:
    raise ConfigError("model.auxiliary_head: deeplab_v2 supervises the output of each of its "
                      "scales instead; remove it")
  if not scales or any(float(s) <= 0 for s in scales):
    raise ConfigError(f"model.scales must be a non-empty sequence of positive input scales, "
                      f"got {scales!r}")
  model = segmentor.encoder_decoder_with("aspp_l_head")(num_classes, backbone, decode_head,
                                                        neck, (), dtype)
  if model.aux_loss_weights:
    raise ConfigError("model.decode_head: deeplab_v2 needs a head with one output")
  return DeepLabV2(backbone=model.backbone, decode_head=model.decode_head, neck=model.neck,
                   scales=tuple(float(s) for s in scales),
                   aux_loss_weights=(1.0,) * len(scales),
                   output_losses=model.output_losses * (len(scales) + 1))


MODELS.register("deeplab_v2", build_deeplab_v2)
