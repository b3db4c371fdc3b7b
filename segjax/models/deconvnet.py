"""DeconvNet (Noh, Hong and Han, "Learning Deconvolution Network for Semantic Segmentation",
ICCV 2015): a convolution network and its mirror image, a deconvolution network of unpooling
and transposed convolutions.

    image -- convolution network: VGG-16's 13 conv-BN-ReLUs, 5 max pools that keep their
             indices ("switches"), 1/32
             fc6: 7x7 conv (valid: 7x7 -> 1x1), 4096 -BN-ReLU;  fc7: 1x1 conv, 4096 -BN-ReLU
      deconvolution network:
             fc6-deconv: 7x7 transposed conv (1x1 -> 7x7), 512 -BN-ReLU
             stage 5..1: unpool with that stage's switches, then 3x3 transposed convs -BN-ReLU
                         (`deconv{stage}_{i}`, the last narrowing to the next stage's width)
      seg-score: 1x1 conv -> num_classes                               (logits at the input size)

Layers, widths and names follow the authors' Caffe model (github.com/HyeonwooNoh/DeconvNet
model/DeconvNet/DeconvNet_inference_deploy.prototxt): `backbone/conv1_1 .. conv5_3` (VGG-16's
names, so torchvision's `vgg16_bn` converts into `params/backbone/`), `fc6`, `fc7`,
`decoder/fc6_deconv`, `decoder/deconv5_1 .. deconv1_2`, `decoder/seg_score`. Each unit holds
`conv` (a flax ConvTranspose with transpose_kernel=True for the deconvolutions: a PyTorch
(in, out, k, k) ConvTranspose2d weight, the layout of Caffe's Deconvolution blob too, maps to
it by a transpose, no flip; tested against torch) and `bn`.

Departures from the Caffe model, each keeping the function at the paper's 224x224 input:
  * Its convs and deconvs carry a bias before every BatchNorm; segjax's units have none (the
    batch-mean subtraction removes it in training, it folds into the running mean at test
    time): 16,704 fewer parameters, 251,805,653 -> 251,788,949 for VOC's 21 classes (derived
    from the prototxt's shapes in tests/test_segnet_deconvnet.py; the paper: 252M).
  * Pooling is Caffe's ceil mode at any size, and the network runs on any input: a pool5
    map of at least 7x7 goes through fc6 (valid, (h-6)x(w-6)) and fc6-deconv (back to hxw)
    unchanged, so sizes above 224 need nothing; a side below 7 (inputs under 193 pixels) is
    zero-padded to 7 around the centre before fc6 and cropped back after fc6-deconv, where
    the original cannot run at all.
The paper's two-stage training on object-centred crops and its proposal-based inference
(the ensemble with FCN-8s and the CRF) are recipes, not the module; see
configs/deconvnet_vgg16_voc.py.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers, segnet
from segjax.models.registry import MODELS

Dtype = Any

FC_KERNEL = 7  # fc6: VGG-16's first fully connected layer as a 7x7 convolution


class ConvBNReLU(nn.Module):
  """A bias-free conv (`transpose=False`) or transposed conv `conv`, BatchNorm `bn`, ReLU:
  every DeconvNet layer but the score. `pad` is Caffe's: a k x k transposed conv with pad p
  maps h to h + k - 1 - 2p (3x3 pad 1: same size; fc6-deconv, 7x7 pad 0: 1 -> 7)."""
  features: int
  kernel_size: int
  pad: int
  transpose: bool = False
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    k, p = self.kernel_size, self.pad
    if self.transpose:  # flax pads the stride-dilated input: k - 1 - p each side
      x = nn.ConvTranspose(self.features, (k, k), padding=((k - 1 - p,) * 2,) * 2,
                           transpose_kernel=True, use_bias=False, dtype=self.dtype,
                           name="conv")(x)
    else:
      x = layers.Conv(self.features, (k, k), padding=((p, p), (p, p)), use_bias=False,
                  dtype=self.dtype, name="conv")(x)
    return nn.relu(layers.batch_norm(train, self.dtype, "bn")(x))


class DeconvolutionNetwork(nn.Module):
  """fc6-deconv, then per stage (deepest first) unpooling and 3x3 deconvolutions, then the
  1x1 score. `offset`: where pool5 sits in fc7's input when DeconvNet padded it to 7x7."""
  widths: Tuple[int, ...]
  num_classes: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, switches: segnet.Switches, offset: Tuple[int, int], train: bool):
    x = ConvBNReLU(self.widths[-1], FC_KERNEL, 0, transpose=True, dtype=self.dtype,
                   name="fc6_deconv")(x, train)
    pool5 = switches[-1][0].shape  # the indices have pool5's shape
    x = x[:, offset[0]:offset[0] + pool5[1], offset[1]:offset[1] + pool5[2]]
    for stage in reversed(range(len(segnet.VGG16_DEPTHS))):
      indices, size = switches[stage]
      x = layers.max_unpool(x, indices, size)
      for i, width in enumerate(segnet.decoder_widths(self.widths, stage)):
        x = ConvBNReLU(width, 3, 1, transpose=True, dtype=self.dtype,
                       name=f"deconv{stage + 1}_{i + 1}")(x, train)
    return layers.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="seg_score")(x)


class DeconvNet(nn.Module):
  """Normalised NHWC images -> (logits at the input size, ()); see the module docstring."""
  num_classes: int
  widths: Tuple[int, ...] = segnet.VGG16_WIDTHS
  fc_width: int = 4096
  aux_loss_weights: Tuple[float, ...] = ()  # no auxiliary outputs
  output_losses: Tuple = ()  # () = cross-entropy (segjax.losses.DEFAULT_LOSSES)
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False):
    x, switches = segnet.VGGEncoder(self.widths, dtype=self.dtype, name="backbone")(
        images, train)
    ph, pw = max(FC_KERNEL - x.shape[1], 0), max(FC_KERNEL - x.shape[2], 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    x = ConvBNReLU(self.fc_width, FC_KERNEL, 0, dtype=self.dtype, name="fc6")(x, train)
    x = ConvBNReLU(self.fc_width, 1, 0, dtype=self.dtype, name="fc7")(x, train)
    logits = DeconvolutionNetwork(self.widths, self.num_classes, dtype=self.dtype,
                                  name="decoder")(x, switches, (ph // 2, pw // 2), train)
    return logits, ()


def build_deconvnet(num_classes: int, widths: Sequence[int] = segnet.VGG16_WIDTHS,
                    fc_width: int = 4096, loss=None, dtype: Any = None, backbone=None,
                    decode_head=None, neck=None, auxiliary_head=()) -> DeconvNet:
  """config.model = {"name": "deconvnet", "widths": (64, 128, 256, 512, 512),
  "fc_width": 4096, "loss": [...]}: `widths` (the five VGG stage widths) and `fc_width`
  (fc6/fc7) shrink the model for tests; `loss` is a head's loss list."""
  if int(fc_width) < 1:
    raise ConfigError(f"model.fc_width must be a positive width (DeconvNet: 4096), got "
                      f"{fc_width!r}")
  return DeconvNet(num_classes=num_classes, widths=segnet.check_widths(widths),
                   fc_width=int(fc_width),
                   output_losses=segnet.whole_model_losses("deconvnet", num_classes, loss,
                                                           backbone, decode_head, neck,
                                                           auxiliary_head),
                   dtype=dtype)


MODELS.register("deconvnet", build_deconvnet)
