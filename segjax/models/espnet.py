"""ESPNet and ESPNet-C (Mehta, Rastegari, Caspi, Shapiro and Hajishirzi, "ESPNet: Efficient
Spatial Pyramid of Dilated Convolutions for Semantic Segmentation", ECCV 2018).

The ESP module (Fig. 1): reduce, split, transform, merge.

    x -- reduce: 1x1 conv to d = M/5 maps (3x3/2 when the module downsamples)
      -- split + transform: five 3x3 convs of d maps, dilated 1, 2, 4, 8, 16 (the first one
         takes the remainder: M - 4d maps)
      -- hierarchical feature fusion: sums 2, 2+4, 2+4+8, 2+4+8+16, concatenated after the
         dilation-1 maps (the running sums remove the gridding of the larger dilations)
      -- [+ x] (same-width modules) -> BN -> PReLU

ESPNet-C, the encoder (Fig. 4c), with p, q ESP modules at levels 2, 3 (the paper's alpha_2,
alpha_3; ESPNet uses p=2, q=8):

    image -- level1: 3x3/2 conv-BN-PReLU, 16                               = output0       1/2
          || the image, 3x3/2 average-pooled once (1/2) and twice (1/4)
      b1: BN-PReLU([output0, image/2])                                     = output0_cat   19
      level2_0: strided ESP -> 64 = output1_0;  level2_1..p: ESP 64 -> output1             1/4
      b2: BN-PReLU([output1, output1_0, image/4])                          = output1_cat   131
      level3_0: strided ESP -> 128 = output2_0; level3_1..q: ESP 128 -> output2             1/8
      b3: BN-PReLU([output2_0, output2])                                   = output2_cat   256
      classifier: 1x1 conv -> num_classes                                      (logits at 1/8)

ESPNet (Fig. 4d) adds the light decoder on ESPNet-C's logits (C = num_classes):

    1/8: br: BN(logits) -> up_l3: 2x2/2 transposed conv, C                                 1/4
    1/4: level3_C: 1x1 conv(output1_cat) -> C; concat with the above -> combine_l2_l3:
         BN-PReLU, ESP 2C -> C (no residual) -> up_l2: 2x2/2 transposed conv, BN-PReLU      1/2
    1/2: concat output0 -> conv: 3x3 conv-BN-PReLU, C -> classifier: 2x2/2 transposed conv
                                                                     (logits at the input size)

Every conv is bias-free, every BatchNorm has eps 1e-3, every PReLU one slope per channel.
Names are the official PyTorch model's (github.com/sacmehta/ESPNet test/Model.py: `encoder/
level1/conv`, `encoder/level2_0/d8/conv`, `encoder/b2/act`, `combine_l2_l3_1/bn/bn`,
`up_l2_0`), with one change: the official ModuleList entries `level2.{i}` / `level3.{i}`
would collide with the strided modules `level2_0` / `level3_0` under flax's naming, so they
are `level2_{i + 1}` / `level3_{i + 1}`. Parameters (p=2, q=8): ESPNet 364,569 at the
official 20 classes, exactly the released Cityscapes weights (pretrained/decoder/
espnet_p_2_q_8.pth; PSPNet's 65.7M / 0.3646M is the abstract's "180 times smaller"), 362,949
at segjax's 19; ESPNet-C 349,449 / 349,193. The training script's copy of the model
(train/Model.py) feeds `output0_cat` instead of `output0` to the last 3x3 conv (3 more input
channels: 365,109 / 363,462): `skip_with_image=True`. ESPNet-C (`espnet_c`) holds the same
`encoder/` tree, so its checkpoint initialises ESPNet (the official two-stage training).
The released p=2, q=8 Cityscapes weights, converted by these names, give logits equal to the
official model's (2e-6 relative, every argmax the same) on the repository's sample frame at
512x1024 (checked once by hand; tests use no downloaded weights).

The official ESPNet runs only on inputs whose sides are multiples of 8 (a transposed conv
doubles an odd-sided coarser map past the finer one, and the concatenation fails); here each
transposed conv is cropped to the size of the map it meets (or the image), so any size works
and the logits come out at the input size. ESPNet-C runs at any size in both.
"""
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers, segnet
from segjax.models.registry import MODELS

Dtype = Any
EPS = 1e-3  # every BatchNorm2d(n, eps=1e-03) of the official model
DILATIONS = (1, 2, 4, 8, 16)


class C(nn.Module):
  """A bias-free k x k conv (`conv`), 'same' padding scaled by the dilation: the official
  C / CDilated."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  dilation: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    k, d = self.kernel_size, self.dilation
    p = (k - 1) // 2 * d
    return layers.Conv(self.features, (k, k), strides=self.stride, padding=((p, p), (p, p)),
                       kernel_dilation=d, use_bias=False, dtype=self.dtype, name="conv")(x)


class BR(nn.Module):
  """BatchNorm (`bn`) -> PReLU (`act`)."""
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.batch_norm(train, self.dtype, "bn", eps=EPS)(x)
    return layers.PReLU(name="act")(x)


class CBR(nn.Module):
  """Bias-free k x k conv (`conv`) -> BatchNorm (`bn`) -> PReLU (`act`)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    p = (self.kernel_size - 1) // 2
    x = layers.Conv(self.features, (self.kernel_size,) * 2, strides=self.stride,
                    padding=((p, p), (p, p)), use_bias=False, dtype=self.dtype, name="conv")(x)
    x = layers.batch_norm(train, self.dtype, "bn", eps=EPS)(x)
    return layers.PReLU(name="act")(x)


class ESP(nn.Module):
  """The ESP module (see the module docstring). `downsample`: the official DownSamplerB (3x3/2
  reduction, no residual, BatchNorm `bn` and PReLU `act`); otherwise
  DilatedParllelResidualBlockB (1x1 reduction, the input added when `add`, BN-PReLU `bn`)."""
  features: int
  downsample: bool = False
  add: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    n = self.features // 5
    n1 = self.features - 4 * n
    if self.downsample:
      reduced = C(n, 3, 2, dtype=self.dtype, name="c1")(x)
    else:
      reduced = C(n, 1, dtype=self.dtype, name="c1")(x)
    branches = [C(n1 if d == 1 else n, 3, 1, d, dtype=self.dtype, name=f"d{d}")(reduced)
                for d in DILATIONS]
    fused = [branches[0]]
    for branch in branches[1:]:  # hierarchical feature fusion
      fused.append(branch if len(fused) == 1 else fused[-1] + branch)
    out = jnp.concatenate(fused, axis=-1)
    if self.downsample:
      out = layers.batch_norm(train, self.dtype, "bn", eps=EPS)(out)
      return layers.PReLU(name="act")(out)
    if self.add:
      out = x + out
    return BR(dtype=self.dtype, name="bn")(out, train)


def input_projection(image: jnp.ndarray, times: int) -> jnp.ndarray:
  """The official InputProjectionA: `times` 3x3/2 average pools (padding 1, zeros counted, as
  torch's AvgPool2d(3, 2, 1))."""
  for _ in range(times):
    image = nn.avg_pool(image, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                        count_include_pad=True)
  return image


def _check_depths(p: int, q: int) -> Tuple[int, int]:
  if int(p) < 1 or int(q) < 1:
    raise ConfigError(f"model.p and model.q (ESP modules at levels 2 and 3) must be >= 1, "
                      f"got {p}, {q}")
  return int(p), int(q)


class ESPNetC(nn.Module):
  """The encoder: images -> (logits at 1/8, (output0, output0_cat, output1_cat)), the
  logits and the features ESPNet's decoder reads."""
  num_classes: int
  p: int = 2
  q: int = 8
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool):
    dt = self.dtype
    output0 = CBR(16, 3, 2, dtype=dt, name="level1")(images, train)
    inp1 = input_projection(images, 1).astype(output0.dtype)
    inp2 = input_projection(images, 2).astype(output0.dtype)
    output0_cat = BR(dtype=dt, name="b1")(jnp.concatenate([output0, inp1], -1), train)
    output1_0 = ESP(64, downsample=True, dtype=dt, name="level2_0")(output0_cat, train)
    output1 = output1_0
    for i in range(self.p):
      output1 = ESP(64, dtype=dt, name=f"level2_{i + 1}")(output1, train)
    output1_cat = BR(dtype=dt, name="b2")(jnp.concatenate([output1, output1_0, inp2], -1),
                                          train)
    output2_0 = ESP(128, downsample=True, dtype=dt, name="level3_0")(output1_cat, train)
    output2 = output2_0
    for i in range(self.q):
      output2 = ESP(128, dtype=dt, name=f"level3_{i + 1}")(output2, train)
    output2_cat = BR(dtype=dt, name="b3")(jnp.concatenate([output2_0, output2], -1), train)
    logits = C(self.num_classes, 1, dtype=dt, name="classifier")(output2_cat)
    return logits, (output0, output0_cat, output1_cat)


def _up(features: int, dtype, name: str) -> nn.ConvTranspose:
  """torch's ConvTranspose2d(k=2, stride=2, bias=False): kernel (2, 2, out, in), the (in,
  out, 2, 2) weight transposed, no flip."""
  return nn.ConvTranspose(features, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)),
                          transpose_kernel=True, use_bias=False, dtype=dtype, name=name)


class ESPNet(nn.Module):
  """Normalised NHWC images -> (logits, ()): at the input size, or at 1/8 for ESPNet-C
  (`decoder=False`, the encoder alone). See the module docstring."""
  num_classes: int
  p: int = 2
  q: int = 8
  decoder: bool = True
  skip_with_image: bool = False  # train/Model.py's last skip (output0_cat); see above
  aux_loss_weights: Tuple[float, ...] = ()  # no auxiliary outputs
  output_losses: Tuple = ()  # () = cross-entropy (segjax.losses.DEFAULT_LOSSES)
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False):
    k, dt = self.num_classes, self.dtype
    logits, (output0, output0_cat, output1_cat) = ESPNetC(k, self.p, self.q, dtype=dt,
                                                          name="encoder")(images, train)
    if not self.decoder:
      return logits, ()

    def crop(x, like):
      return x[:, :like.shape[1], :like.shape[2]]
    x = layers.batch_norm(train, dt, "br", eps=EPS)(logits)
    output2_c = crop(_up(k, dt, "up_l3_0")(x), output1_cat)
    output1_c = C(k, 1, dtype=dt, name="level3_C")(output1_cat)
    x = BR(dtype=dt, name="combine_l2_l3_0")(jnp.concatenate([output1_c, output2_c], -1), train)
    x = ESP(k, add=False, dtype=dt, name="combine_l2_l3_1")(x, train)
    x = BR(dtype=dt, name="up_l2_1")(crop(_up(k, dt, "up_l2_0")(x), output0), train)
    skip = output0_cat if self.skip_with_image else output0
    x = CBR(k, 3, dtype=dt, name="conv")(jnp.concatenate([x, skip], -1), train)
    return crop(_up(k, dt, "classifier")(x), images), ()


def build_espnet(num_classes: int, p: int = 2, q: int = 8, skip_with_image: bool = False,
                 loss=None, dtype: Any = None, backbone=None, decode_head=None, neck=None,
                 auxiliary_head=(), decoder: bool = True) -> ESPNet:
  """config.model = {"name": "espnet", "p": 2, "q": 8, "loss": [...]}; `loss` is a head's loss
  list (the official recipe: cross-entropy with 1 / ln(1.10 + p) class weights)."""
  p, q = _check_depths(p, q)
  name = "espnet" if decoder else "espnet_c"
  if decoder and num_classes < len(DILATIONS):
    raise ConfigError(f"espnet: the decoder's ESP module splits num_classes maps into "
                      f"{len(DILATIONS)} branches, so it needs at least {len(DILATIONS)} classes, "
                      f"got {num_classes} (espnet_c has no such limit)")
  return ESPNet(num_classes=num_classes, p=p, q=q, decoder=bool(decoder),
                skip_with_image=bool(skip_with_image),
                output_losses=segnet.whole_model_losses(name, num_classes, loss, backbone,
                                                        decode_head, neck, auxiliary_head),
                dtype=dtype)


def build_espnet_c(num_classes: int, p: int = 2, q: int = 8, loss=None, dtype: Any = None,
                   backbone=None, decode_head=None, neck=None, auxiliary_head=()) -> ESPNet:
  """config.model = {"name": "espnet_c", "p": 2, "q": 8}: the encoder alone, logits at 1/8.
  Its parameters are ESPNet's `encoder/` (the official ESPNet_Encoder's names under that
  prefix), so an ESPNet-C run initialises ESPNet (config.init_from): the official two-stage
  training (configs/espnet_c_city.py, then configs/espnet_city.py)."""
  return build_espnet(num_classes, p, q, loss=loss, dtype=dtype, backbone=backbone,
                      decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
                      decoder=False)


MODELS.register("espnet", build_espnet)
MODELS.register("espnet_c", build_espnet_c)
