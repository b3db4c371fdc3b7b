"""UNet++ (Zhou, Siddiquee, Tajbakhsh and Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018; extended in "UNet++: Redesigning Skip Connections to
Exploit Multiscale Features in Image Segmentation", IEEE TMI 2019), a whole model.

Fig. 1 of the paper: the encoder column X^{i,0} (a conv block, then a 2x2 max-pool down to
level i + 1) and nested, dense skip pathways. Node X^{i,j} (j >= 1) is a conv block over the
concatenation of the up-sampled node below-left and every earlier node of its level:

    X^{i,j} = H([U(X^{i+1,j-1}), X^{i,0}, ..., X^{i,j-1}])

    X00 ───────> X01 ───────> X02 ───────> X03 ───────> X04 ──> output_4
      ↘         ↗   ↘        ↗   ↘        ↗   ↘        ↗
       X10 ───────> X11 ───────> X12 ───────> X13          (each X0j ──> output_j, a 1x1
         ↘         ↗   ↘        ↗   ↘        ↗              conv: deep supervision)
          X20 ───────> X21 ───────> X22
            ↘         ↗   ↘        ↗
             X30 ───────> X31
               ↘         ↗
                X40

(↘: 2x2 max-pool; ↗: U, a 2x2 transposed convolution, stride 2, of its own per node;
──>: every node of a level also feeds every later node of that level.) H is the official
code's `standard_unit` (github.com/MrGiovanni/UNetPlusPlus keras/helper_functions.py,
`UNetPlusPlus`): two 3x3 "same" convolutions with ReLU, each followed by dropout 0.5, He-normal
kernels (the up-convolutions keep Keras' Glorot-uniform default). Widths per level are the
code's `nb_filter = [32, 64, 128, 256, 512]`; the concatenation order [up-sampled, X^{i,0},
..., X^{i,j-1}] is the code's (the paper's formula lists the same inputs, skips first).

Deep supervision: a 1x1 convolution on each of X^{0,1..4} (the code's `output_1..4`). The
model returns the head of its pruning level as the logits and the shallower heads as auxiliary
outputs, each with loss weight 1: the official Keras model is compiled with one loss for its
four outputs, i.e. their sum. Without deep supervision only `output_4` exists, as in the code.

Pruning (Sec. 2 of the paper): with deep supervision, the sub-network of nodes X^{i,j}, i + j
<= L, and its head X^{0,L} is UNet++ L^L. `prune_level=L` computes only that sub-network
("fast mode"; the parameters are still created for the whole network, so a checkpoint of the
full model evaluates at any level). `average_heads=True` is the paper's "accurate mode": at
inference the logits are log of the mean of the softmaxes of heads 1..L (the code averages the
sigmoid outputs of its one-class heads).

Inputs whose sides are not multiples of 2^D (D = len(widths) - 1 poolings) are mirror-padded at
the bottom and right to the next multiple and the logits cropped back, so logits always have
the input's size.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers, unet
from segjax.models.registry import MODELS

Dtype = Any

# The official code's initialisers: He-normal kernels (`kernel_initializer='he_normal'`) and
# Keras' default Glorot-uniform for its Conv2DTranspose layers.
HE_NORMAL = unet.flat_variance_scaling(2.0, "fan_in", "truncated_normal")
GLOROT_UNIFORM = unet.flat_variance_scaling(1.0, "fan_avg", "uniform")


class UNetPlusPlus(nn.Module):
  """The nested U-Net of the module docstring. Parameters: `conv_{i}_{j}` (the conv block of
  X^{i,j}), `up_{i}_{j}` (the up-convolution feeding X^{i,j}), `output_{j}` (the head on
  X^{0,j}). Returns (logits of head `prune_level`, (heads 1 .. prune_level - 1))."""
  num_classes: int
  widths: Sequence[int] = (32, 64, 128, 256, 512)
  deep_supervision: bool = True
  prune_level: Optional[int] = None  # None = the full network, len(widths) - 1
  average_heads: bool = False
  norm: bool = False
  dropout: float = 0.5
  pad_mode: str = "reflect"
  dtype: Optional[Dtype] = None
  aux_loss_weights: Tuple[float, ...] = ()
  output_losses: Tuple[Tuple[Tuple[str, float, Tuple], ...], ...] = ()

  @property
  def depth(self) -> int:
    return len(self.widths) - 1

  @property
  def level(self) -> int:
    return self.depth if self.prune_level is None else self.prune_level

  @nn.compact
  def __call__(self, images, train: bool = False):
    h, w = images.shape[1:3]
    x = unet.pad_to_multiple(images, 2 ** self.depth, self.pad_mode)
    # Initialisation creates every parameter; a pruned apply computes nodes i + j <= level.
    everything = self.is_initializing()
    wanted = lambda i, j: everything or i + j <= self.level
    block = lambda i, j: unet.ConvBlock(self.widths[i], "same", self.norm, self.dropout,
                                        HE_NORMAL, self.dtype, name=f"conv_{i}_{j}")
    nodes = {}
    for i in range(self.depth + 1):
      if wanted(i, 0):
        nodes[i, 0] = block(i, 0)(x if i == 0 else unet.max_pool(nodes[i - 1, 0]), train)
    for j in range(1, self.depth + 1):
      for i in range(self.depth + 1 - j):
        if wanted(i, j):
          up = nn.ConvTranspose(self.widths[i], (2, 2), strides=(2, 2), padding="VALID",
                                kernel_init=GLOROT_UNIFORM, dtype=self.dtype,
                                name=f"up_{i}_{j}")(nodes[i + 1, j - 1])
          inputs = [up] + [nodes[i, k] for k in range(j)]
          nodes[i, j] = block(i, j)(jnp.concatenate(inputs, axis=-1), train)
    heads = range(1, self.depth + 1) if self.deep_supervision else (self.depth,)
    outputs = {j: layers.Conv(self.num_classes, (1, 1), kernel_init=HE_NORMAL, dtype=self.dtype,
                          name=f"output_{j}")(nodes[0, j])[:, :h, :w]
               for j in heads if everything or j <= self.level}
    logits = outputs[self.level]
    if self.average_heads and not train:
      probs = [jax.nn.softmax(outputs[j].astype(jnp.float32), axis=-1)
               for j in range(1, self.level + 1)]
      logits = jnp.log(sum(probs) / len(probs))
    aux = tuple(outputs[j] for j in range(1, self.level)) if self.deep_supervision else ()
    return logits, aux


def build_unet_plusplus(num_classes: int, dtype: Any = None, widths=(32, 64, 128, 256, 512),
                        deep_supervision: bool = True, prune_level: Optional[int] = None,
                        average_heads: bool = False, norm: bool = False, dropout: float = 0.5,
                        pad_mode: str = "reflect", loss=None, backbone=None, decode_head=None,
                        neck=None, auxiliary_head=()) -> UNetPlusPlus:
  """config.model = {"name": "unet_plusplus", "widths", "deep_supervision", "prune_level"
  (1 .. len(widths) - 1, None = full), "average_heads", "norm", "dropout", "pad_mode",
  "loss": [...]}. `loss` (the format of a head's `loss`) applies to every supervised head."""
  unet.warn_unused_parts("unet_plusplus", backbone=backbone, decode_head=decode_head,
                         neck=neck, auxiliary_head=auxiliary_head)
  widths = unet._check_common(widths, dropout, pad_mode)
  depth = len(widths) - 1
  if prune_level is not None and (isinstance(prune_level, bool) or
                                  prune_level not in range(1, depth + 1)):
    raise ConfigError(f"model.prune_level must be None (the full network) or a level in "
                      f"1..{depth} (UNet++ L1..L{depth}), got {prune_level!r}")
  level = depth if prune_level is None else prune_level
  if not deep_supervision and level != depth:
    raise ConfigError(f"model.prune_level={prune_level} needs model.deep_supervision=True: "
                      f"without it only the head on X^(0,{depth}) exists and is trained")
  if average_heads and not deep_supervision:
    raise ConfigError("model.average_heads (the paper's accurate mode) averages the deep "
                      "supervision heads; set model.deep_supervision=True")
  specs = unet.output_loss_specs(loss, num_classes)
  aux = level - 1 if deep_supervision else 0
  return UNetPlusPlus(num_classes=num_classes, widths=widths,
                      deep_supervision=bool(deep_supervision), prune_level=prune_level,
                      average_heads=bool(average_heads), norm=bool(norm),
                      dropout=float(dropout), pad_mode=pad_mode, dtype=dtype,
                      aux_loss_weights=(1.0,) * aux, output_losses=(specs,) * (aux + 1))


MODELS.register("unet_plusplus", build_unet_plusplus)
