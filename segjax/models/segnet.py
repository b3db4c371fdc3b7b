"""SegNet (Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017): the decoder upsamples with the encoder's
max-pooling indices instead of learning to upsample.

    image -- encoder: VGG-16's 13 convs, each 3x3 conv-BN-ReLU; after each of the 5 stages
             a 2x2 max pool that remembers where every maximum was (its "indices")
      decoder, the mirror image, stage 5 first: unpool with that stage's indices (each value
             back where its maximum was, zeros elsewhere: a sparse map at the pre-pool size),
             then 3x3 conv-BN-ReLUs that densify it, the last of a stage narrowing to the
             next stage's width
      the last conv of stage 1 is the classifier: 3x3, num_classes outputs, no BN   (logits
             at the input size)

Layers and names follow the authors' Caffe model (github.com/alexgkendall/SegNet-Tutorial
Models/segnet_train.prototxt): encoder `backbone/conv1_1 .. conv5_3`, decoder
`decoder/conv5_3_D .. conv1_2_D` and the classifier `decoder/conv1_1_D`. Pooling is Caffe's
ceil mode (layers.max_pool_with_indices), so any input size works and the logits come out at
exactly that size. The encoder's names are VGG-16's, so torchvision's `vgg16_bn` (ImageNet;
the paper initialises the encoder from VGG-16) converts into `params/backbone/` with the same
renames as segjax's VGG backbone.

One difference from the Caffe model (and from torchvision's vgg16_bn): its convs carry a bias
before every BatchNorm; these are layers.ConvBNAct units without one, as everywhere in
segjax. A bias in front of BatchNorm is removed by the batch-mean subtraction in training and
folds into the running mean at test time (mean - bias: how a converter loads one), so the
function is the same with 7,936 fewer parameters (one per BN channel: 29,449,355 ->
29,441,419 for CamVid's 11 classes; tests/test_segnet_deconvnet.py derives both from the
prototxt's layer shapes; the paper quotes 29.5M).
"""
from typing import Any, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
from absl import logging

from segjax.errors import ConfigError
from segjax.models import layers, segmentor
from segjax.models.registry import MODELS

Dtype = Any

VGG16_DEPTHS = (2, 2, 3, 3, 3)  # convs per stage
VGG16_WIDTHS = (64, 128, 256, 512, 512)

# Per stage: the pooling indices and the size of the map they were pooled from.
Switches = List[Tuple[jnp.ndarray, Tuple[int, int]]]


def decoder_widths(widths: Sequence[int], stage: int) -> Tuple[int, ...]:
  """Output widths of the decoder convs of `stage` (0-based), in the order they run.

  The mirror of the encoder stage: its width, except the last conv, which narrows to the
  width of the stage below (stage 0 keeps its own), so the next unpooling meets the
  features its indices came from. Shared by SegNet and DeconvNet, whose prototxts agree."""
  n = VGG16_DEPTHS[stage]
  return (widths[stage],) * (n - 1) + (widths[max(stage - 1, 0)],)


def check_widths(widths: Sequence[int], key: str = "model.widths") -> Tuple[int, ...]:
  if len(widths) != len(VGG16_DEPTHS) or any(int(w) < 1 for w in widths):
    raise ConfigError(f"{key} must be {len(VGG16_DEPTHS)} positive stage widths (VGG-16: "
                      f"{VGG16_WIDTHS}), got {tuple(widths)}")
  return tuple(int(w) for w in widths)


class VGGEncoder(nn.Module):
  """VGG-16's 13 conv-BN-ReLUs `conv{stage}_{i}` and 5 max pools that keep their indices.

  Returns the 1/32 map and the switches of every stage (SegNet's and DeconvNet's encoder;
  segjax's VGG backbone has the same parameter names, without the indices)."""
  widths: Tuple[int, ...] = VGG16_WIDTHS
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool) -> Tuple[jnp.ndarray, Switches]:
    switches = []
    for stage, (depth, width) in enumerate(zip(VGG16_DEPTHS, self.widths)):
      for i in range(depth):
        x = layers.ConvBNAct(width, 3, dtype=self.dtype,
                             name=f"conv{stage + 1}_{i + 1}")(x, train)
      size = (x.shape[1], x.shape[2])
      x, indices = layers.max_pool_with_indices(x)
      switches.append((indices, size))
    return x, switches


class SegNetDecoder(nn.Module):
  """Per stage, deepest first: unpool with the encoder's indices, then conv-BN-ReLUs
  `conv{stage}_{i}_D` (i counting down, as the prototxt); `conv1_1_D` is the classifier."""
  widths: Tuple[int, ...]
  num_classes: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, switches: Switches, train: bool):
    for stage in reversed(range(len(VGG16_DEPTHS))):
      indices, size = switches[stage]
      x = layers.max_unpool(x, indices, size)
      outs = decoder_widths(self.widths, stage)
      if stage == 0:
        outs = outs[:-1]  # the last conv of stage 1 is the classifier, below
      for i, width in enumerate(outs):
        x = layers.ConvBNAct(width, 3, dtype=self.dtype,
                             name=f"conv{stage + 1}_{VGG16_DEPTHS[stage] - i}_D")(x, train)
    return layers.Conv(self.num_classes, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                   name="conv1_1_D")(x)


class SegNet(nn.Module):
  """Normalised NHWC images -> (logits at the input size, ()); see the module docstring."""
  num_classes: int
  widths: Tuple[int, ...] = VGG16_WIDTHS
  aux_loss_weights: Tuple[float, ...] = ()  # no auxiliary outputs
  output_losses: Tuple = ()  # () = cross-entropy (segjax.losses.DEFAULT_LOSSES)
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False):
    x, switches = VGGEncoder(self.widths, dtype=self.dtype, name="backbone")(images, train)
    logits = SegNetDecoder(self.widths, self.num_classes, dtype=self.dtype,
                           name="decoder")(x, switches, train)
    return logits, ()


def whole_model_losses(name: str, num_classes: int, loss, backbone, decode_head, neck,
                       auxiliary_head) -> Tuple:
  """`output_losses` of a whole model from its config's `loss` list (a head's `loss`, see
  segjax/models/segmentor.py). The encoder_decoder keys, which the registry walk of
  tests/test_models.py passes to every model, are ignored with a warning."""
  unused = [key for key, value in (("backbone", backbone), ("decode_head", decode_head),
                                   ("neck", neck), ("auxiliary_head", auxiliary_head)) if value]
  if unused:
    logging.warning("model.%s: not used by %s (it builds its own encoder and decoder); "
                    "ignored", ", model.".join(unused), name)
  if loss is None:
    return ()
  return (segmentor._head_losses(loss, "model.loss", num_classes),)  # pylint: disable=protected-access


def build_segnet(num_classes: int, widths: Sequence[int] = VGG16_WIDTHS, loss=None,
                 dtype: Any = None, backbone=None, decode_head=None, neck=None,
                 auxiliary_head=()) -> SegNet:
  """config.model = {"name": "segnet", "widths": (64, 128, 256, 512, 512), "loss": [...]}.

  `widths` (the five VGG stage widths) shrink the model for tests; `loss` is a head's loss
  list (e.g. cross-entropy with median-frequency class weights, the paper's)."""
  return SegNet(num_classes=num_classes, widths=check_widths(widths),
                output_losses=whole_model_losses("segnet", num_classes, loss, backbone,
                                                 decode_head, neck, auxiliary_head),
                dtype=dtype)


MODELS.register("segnet", build_segnet)
