"""ENet (Paszke, Chaurasia, Kim and Culurciello, "ENet: A Deep Neural Network Architecture for
Real-Time Semantic Segmentation", arXiv 1606.02147, 2016): a large encoder and a small
decoder of ResNet-like bottlenecks, downsampling early and upsampling with max-pool indices.

    image -- initial: 3x3/2 conv (13) || 2x2/2 max pool (3) -> concat 16 -BN-PReLU       1/2
      stage 1: bottleneck1.0 downsampling -> 64, bottleneck1.1-1.4                       1/4
      stage 2: bottleneck2.0 downsampling -> 128, then 2.1-2.8: regular, dilated 2,
               asymmetric 5, dilated 4, regular, dilated 8, asymmetric 5, dilated 16     1/8
      stage 3: 3.1-3.8, stage 2 again without its downsampling                           1/8
      stage 4: bottleneck4.0 upsampling -> 64 (bottleneck2.0's indices), 4.1, 4.2        1/4
      stage 5: bottleneck5.0 upsampling -> 16 (bottleneck1.0's indices), 5.1             1/2
      fullconv: 2x2/2 transposed conv -> num_classes                     (logits at the input size)

  encoder bottleneck (Fig. 2b), internal width = output / 4:
      x -+- projection 1x1 (2x2/2 when downsampling) -BN-PReLU -> conv -BN-PReLU
         |     -> expansion 1x1 -BN -> spatial dropout (0.01 in stage 1, 0.1 after)
         +- identity (downsampling: 2x2/2 max pool, remembering indices, zero channels
         |  appended up to the output width)
         sum -> PReLU
      conv: 3x3 ("regular"), dilated 3x3, or "asymmetric" 5: a 1x5 then a 5x1 conv.
  decoder bottleneck, ReLU instead of PReLU, no dropout:
      x -+- 1x1 -BN-ReLU -> 3x3 conv (upsampling: 3x3/2 transposed conv) -BN-ReLU -> 1x1 -BN
         +- identity (upsampling: 1x1 conv -BN -> max unpooling with the encoder's indices)
         sum -> ReLU

Layers, widths, biases and BatchNorm eps (1e-3) are the authors' Torch model's
(github.com/e-lab/ENet-training train/models/encoder.lua and decoder.lua, by the paper's
first author): projections and expansions carry no bias (the paper's "we do not use bias terms
in any of the projections"), the 3x3 / dilated convs, the second conv of an asymmetric pair,
the initial conv and the transposed convs do. Names are the paper's bottleneck numbers:
`bottleneck2_3/conv2a`, `bottleneck4_0/shortcut_conv`, `fullconv` (tests/reference/
enet_official.py is a PyTorch transcription of the Torch model with the same names; its
logits equal these). Parameters: 364,311 for Cityscapes' 19 classes, exactly the Torch
model's count (the paper rounds to 0.37M; see tests/test_enet_espnet.py).

The Torch model pools in floor mode, so it runs only on inputs whose sides are multiples of 8.
Here pooling is Caffe's / torch's ceil mode (layers.max_pool_with_indices), a downsampling
projection zero-pads an odd map by one row / column at the bottom / right, and every transposed
conv is cropped to the size its unpooling (or the image) has, so any input size works and
gives logits at that size; at multiples of 8 nothing of this changes the result.

The paper trains in two stages, the encoder first (with a 1x1 classifier on its 1/8 map,
against downsampled labels), then the whole model; configs/enet_city.py trains the whole model
at once.
"""
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.models import layers, segnet
from segjax.models.registry import MODELS

Dtype = Any
EPS = 1e-3  # the Torch model's SpatialBatchNormalization(n, 1e-3)

# Bottlenecks {stage}.1-{stage}.8 of stages 2 and 3: (conv, dilation or asymmetric kernel).
SECTION = (("regular", 1), ("dilated", 2), ("asymmetric", 5), ("dilated", 4), ("regular", 1),
           ("dilated", 8), ("asymmetric", 5), ("dilated", 16))

Switch = Tuple[jnp.ndarray, Tuple[int, int]]  # pooling indices, the size they were pooled from


def _bn(train: bool, dtype, name: str) -> nn.BatchNorm:
  return layers.batch_norm(train, dtype, name, eps=EPS)


def _transposed_conv(features: int, kernel: int, dtype, name: str) -> nn.ConvTranspose:
  """A stride-2 transposed conv that doubles a map: torch's ConvTranspose2d(k=3, padding=1,
  output_padding=1) or (k=2, padding=0), biased; kernel (k, k, out, in), torch's (in, out, k, k)
  weight transposed, no flip."""
  pad = {3: (1, 2), 2: (1, 1)}[kernel]  # flax pads the stride-dilated input
  return nn.ConvTranspose(features, (kernel, kernel), strides=(2, 2), padding=(pad, pad),
                          transpose_kernel=True, dtype=dtype, name=name)


class InitialBlock(nn.Module):
  """3x3/2 conv to `features` - 3 maps || 2x2/2 max pool of the image, concatenated (conv
  first) -> BN -> PReLU (Fig. 2a)."""
  features: int = 16
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = layers.Conv(self.features - x.shape[-1], (3, 3), strides=2, padding=((1, 1), (1, 1)),
                       dtype=self.dtype, name="conv")(x)
    pooled, _ = layers.max_pool_with_indices(x)
    x = jnp.concatenate([conv, pooled.astype(conv.dtype)], axis=-1)
    return layers.PReLU(name="prelu")(_bn(train, self.dtype, "bn")(x))


class Bottleneck(nn.Module):
  """The encoder bottleneck (Fig. 2b) with PReLUs; see the module docstring.

  Returns (output, switch): the pooling indices and pre-pool size of a downsampling bottleneck
  (for the decoder's unpooling), None otherwise."""
  features: int
  conv: str = "regular"  # regular | dilated | asymmetric
  size: int = 1  # the dilation of "dilated", the kernel of "asymmetric"
  downsample: bool = False
  dropout: float = 0.1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool) -> Tuple[jnp.ndarray, Optional[Switch]]:
    internal = self.features // 4
    y = x
    if self.downsample:  # 2x2/2 projection; an odd side gets a zero row / column (ceil mode)
      h, w = x.shape[1:3]
      y = jnp.pad(y, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    s = 2 if self.downsample else 1
    y = layers.Conv(internal, (s, s), strides=s, padding="VALID", use_bias=False,
                    dtype=self.dtype, name="conv1")(y)
    y = layers.PReLU(name="prelu1")(_bn(train, self.dtype, "bn1")(y))
    if self.conv == "asymmetric":
      k, p = self.size, self.size // 2
      y = layers.Conv(internal, (1, k), padding=((0, 0), (p, p)), use_bias=False,
                      dtype=self.dtype, name="conv2a")(y)
      y = layers.Conv(internal, (k, 1), padding=((p, p), (0, 0)), dtype=self.dtype,
                      name="conv2b")(y)
    else:
      d = self.size if self.conv == "dilated" else 1
      y = layers.Conv(internal, (3, 3), padding=((d, d), (d, d)), kernel_dilation=d,
                      dtype=self.dtype, name="conv2")(y)
    y = layers.PReLU(name="prelu2")(_bn(train, self.dtype, "bn2")(y))
    y = layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="conv3")(y)
    y = _bn(train, self.dtype, "bn3")(y)
    y = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(y, deterministic=not train)
    switch = None
    if self.downsample:
      size = (x.shape[1], x.shape[2])
      x, indices = layers.max_pool_with_indices(x)
      switch = (indices, size)
    x = jnp.pad(x.astype(y.dtype), ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
    return layers.PReLU(name="prelu")(x + y), switch


class DecoderBottleneck(nn.Module):
  """The decoder bottleneck with ReLUs; upsampling when given the encoder's `switch`."""
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool, switch: Optional[Switch] = None):
    internal = self.features // 4
    y = layers.Conv(internal, (1, 1), use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(_bn(train, self.dtype, "bn1")(y))
    if switch is not None:
      indices, size = switch
      y = _transposed_conv(internal, 3, self.dtype, "conv2")(y)[:, :size[0], :size[1]]
    else:
      y = layers.Conv(internal, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                      name="conv2")(y)
    y = nn.relu(_bn(train, self.dtype, "bn2")(y))
    y = layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="conv3")(y)
    y = _bn(train, self.dtype, "bn3")(y)
    if switch is not None or x.shape[-1] != self.features:
      x = layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                      name="shortcut_conv")(x)
      x = _bn(train, self.dtype, "shortcut_bn")(x)
      if switch is not None:
        x = layers.max_unpool(x, indices, size)
    return nn.relu(x + y)


class ENet(nn.Module):
  """Normalised NHWC images -> (logits at the input size, ()); see the module docstring."""
  num_classes: int
  aux_loss_weights: Tuple[float, ...] = ()  # no auxiliary outputs
  output_losses: Tuple = ()  # () = cross-entropy (segjax.losses.DEFAULT_LOSSES)
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False):
    dt = self.dtype
    x = InitialBlock(16, dtype=dt, name="initial")(images, train)
    x, switch1 = Bottleneck(64, downsample=True, dropout=0.01, dtype=dt,
                            name="bottleneck1_0")(x, train)
    for i in range(1, 5):
      x, _ = Bottleneck(64, dropout=0.01, dtype=dt, name=f"bottleneck1_{i}")(x, train)
    x, switch2 = Bottleneck(128, downsample=True, dtype=dt, name="bottleneck2_0")(x, train)
    for stage in (2, 3):
      for i, (conv, size) in enumerate(SECTION):
        x, _ = Bottleneck(128, conv, size, dtype=dt, name=f"bottleneck{stage}_{i + 1}")(x, train)
    x = DecoderBottleneck(64, dtype=dt, name="bottleneck4_0")(x, train, switch2)
    x = DecoderBottleneck(64, dtype=dt, name="bottleneck4_1")(x, train)
    x = DecoderBottleneck(64, dtype=dt, name="bottleneck4_2")(x, train)
    x = DecoderBottleneck(16, dtype=dt, name="bottleneck5_0")(x, train, switch1)
    x = DecoderBottleneck(16, dtype=dt, name="bottleneck5_1")(x, train)
    logits = _transposed_conv(self.num_classes, 2, dt, "fullconv")(x)
    return logits[:, :images.shape[1], :images.shape[2]], ()


def build_enet(num_classes: int, loss=None, dtype: Any = None, backbone=None,
               decode_head=None, neck=None, auxiliary_head=()) -> ENet:
  """config.model = {"name": "enet", "loss": [...]}; `loss` is a head's loss list (e.g.
  cross-entropy with the paper's 1 / ln(1.02 + p) class weights)."""
  return ENet(num_classes=num_classes,
              output_losses=segnet.whole_model_losses("enet", num_classes, loss, backbone,
                                                      decode_head, neck, auxiliary_head),
              dtype=dtype)


MODELS.register("enet", build_enet)
