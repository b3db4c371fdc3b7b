"""Segmentation losses, looked up by name in `LOSSES` (a head's `loss` config; mmseg's
`loss_decode`).

Every entry is `fn(logits, labels, **options) -> float32 scalar`. logits: (B, h, w, C) NHWC
at any resolution (1/4, 1/8 of the labels), resized bilinearly to the labels first, as mmseg's
`decode_head.loss_by_feat` does; labels: (B, H, W) class ids, IGNORE_INDEX (255) = no
supervision. Every reduction is a sum over the whole global batch divided by a global count,
never a mean of per-device means, so a loss does not depend on the device count. Each function
equals the mmseg 1.2.2 class its docstring names (tests/test_losses.py compares them); where
mmseg 1.2.2 itself crashes, the docstring says which semantics segjax chose instead.

A head config's `loss` is a sequence of `{"name": ..., "weight": ..., **options}`:
`loss_spec` validates one entry when the model is built and turns it into the hashable
`LossSpec` the model carries (`EncoderDecoder.output_losses`), and `segmentation_loss` sums a
model's outputs' losses into the training loss.
"""
import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from segjax.data.base import IGNORE_INDEX
from segjax.errors import ConfigError
from segjax.models.layers import resize_linear, resize_nearest
from segjax.registry import Registry

LOSSES = Registry("loss")

# One loss of one model output: (name, weight, sorted (option, value) pairs). Hashable, so a
# flax module can carry it as a field and a jitted step can close over it.
LossSpec = Tuple[str, float, Tuple[Tuple[str, Any], ...]]
# What an output without a `loss` config gets (and every output of a model without
# `output_losses`): segjax's cross-entropy, weight 1.
DEFAULT_LOSSES: Tuple[LossSpec, ...] = (("cross_entropy", 1.0, ()),)

# Cityscapes class-balanced weights (train ids 0..18), from mmseg 1.2.2's
# configs/pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py (and the DDRNet Cityscapes configs),
# which borrow them from https://github.com/openseg-group/OCNet.pytorch/issues/14.
CITYSCAPES_CLASS_WEIGHT = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539,
    0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)
NAMED_CLASS_WEIGHTS = {"cityscapes": CITYSCAPES_CLASS_WEIGHT}


def enet_class_weights(frequencies, c: float = 1.02) -> Tuple[float, ...]:
  """ENet's class weights (Paszke et al. 2016, also ERFNet's): 1 / ln(c + p) for a class
  covering a share p of the training pixels. Bounded by 1 / ln(c) (50.5 for c = 1.02), so a
  class that is almost never seen is not weighted without limit."""
  return tuple(round(1.0 / math.log(c + float(p)), 4) for p in frequencies)

# mmseg's weight_reduce_loss divides by (avg_factor + eps) so an all-ignored batch gives 0.
_EPS = float(jnp.finfo(jnp.float32).eps)


def _register(name: str):
  return lambda fn: LOSSES.register(name, fn)


def _prepare(logits: jax.Array, labels: jax.Array):
  """Logits at the labels' size in float32, int32 labels and the mask of supervised pixels.

  Images (B, h, w, C) or volumes (B, d, h, w, C): the resize is bi- or trilinear. The cast
  comes first: bf16 logits upsampled in bf16 round every interpolated pixel (8 mantissa
  bits), which cost the bf16 quickstart ~0.1 mIoU; the f32 loss sees them exact."""
  logits = resize_linear(logits.astype(jnp.float32), labels.shape[1:])
  labels = labels.astype(jnp.int32)
  return logits, labels, labels != IGNORE_INDEX


def _class_weight(class_weight, num_classes: int) -> Optional[jax.Array]:
  """A (C,) float32 array from a tuple or a name in NAMED_CLASS_WEIGHTS; None stays None."""
  if class_weight is None:
    return None
  if isinstance(class_weight, str):
    if class_weight not in NAMED_CLASS_WEIGHTS:
      raise ValueError(f"class_weight {class_weight!r} is not a known name "
                       f"({', '.join(sorted(NAMED_CLASS_WEIGHTS))}) nor a tuple of floats")
    class_weight = NAMED_CLASS_WEIGHTS[class_weight]
  if len(class_weight) != num_classes:
    raise ValueError(f"class_weight has {len(class_weight)} entries for {num_classes} classes")
  return jnp.asarray(class_weight, jnp.float32)


# ------------------------------------------------------------------------------------------
# Cross-entropy and its hard-pixel-mining variant
# ------------------------------------------------------------------------------------------

def _pixel_cross_entropy(logits, labels, valid, weight, label_smoothing: float):
  """torch's F.cross_entropy(reduction="none") per pixel (0 at ignored pixels)."""
  safe = jnp.where(valid, labels, 0)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  if weight is not None:
    loss = loss * weight[safe]
  if label_smoothing:
    log_p = jax.nn.log_softmax(logits)
    smooth = -jnp.sum(log_p if weight is None else log_p * weight, axis=-1)
    loss = (1.0 - label_smoothing) * loss + (label_smoothing / logits.shape[-1]) * smooth
  return loss * valid


def _cross_entropy_mean(pixel_losses, labels, valid, weight, avg_non_ignore: bool):
  """mmseg's `cross_entropy` reduction: the sum over the batch / its avg_factor.

  Without class weights avg_factor is the number of pixels (avg_non_ignore=False) or of
  non-ignored ones (True). With class weights mmseg 1.2.2 divides by the sum of the labelled
  pixels' class weights (torch's weighted mean), but builds it by indexing class_weight with
  every label, 255 included, so it raises IndexError whenever a pixel is ignored, with either
  avg_non_ignore (open-mmlab/mmsegmentation#3734). segjax uses the fix users apply: ignored
  pixels weigh 0, so both settings give sum(w[y] * loss) / sum(w[y]) over labelled pixels,
  which is mmseg's value wherever mmseg runs.
  """
  total = jnp.sum(pixel_losses)
  if weight is not None:
    return total / (jnp.sum(weight[jnp.where(valid, labels, 0)] * valid) + _EPS)
  if avg_non_ignore:
    return total / jnp.maximum(jnp.sum(valid), 1)
  return total / labels.size


@_register("cross_entropy")
def cross_entropy(logits: jax.Array, labels: jax.Array, class_weight=None,
                  label_smoothing: float = 0.0, avg_non_ignore: bool = True) -> jax.Array:
  """Softmax cross-entropy: mmseg's CrossEntropyLoss (use_sigmoid=False).

  class_weight: a tuple of C floats, or "cityscapes" (CITYSCAPES_CLASS_WEIGHT). label_smoothing:
  as torch.nn.functional.cross_entropy's (mmseg 1.2.2 has none); eps spread over the C classes,
  each weighted by its class weight. avg_non_ignore: True averages over non-ignored pixels
  (segjax's default, what every segjax run so far trained with); mmseg's default is False,
  averaging over all pixels, ignored ones included. See `_cross_entropy_mean` for class weights.
  """
  logits, labels, valid = _prepare(logits, labels)
  weight = _class_weight(class_weight, logits.shape[-1])
  pixel = _pixel_cross_entropy(logits, labels, valid, weight, label_smoothing)
  return _cross_entropy_mean(pixel, labels, valid, weight, avg_non_ignore)


@_register("binary_cross_entropy")
def binary_cross_entropy(logits: jax.Array, labels: jax.Array,
                         avg_non_ignore: bool = True) -> jax.Array:
  """Sigmoid cross-entropy of every class against the one-hot labels: mmseg's
  CrossEntropyLoss(use_sigmoid=True), which Fast-SCNN's config trains with.

  Each class is its own binary problem: softplus(-x) for the labelled class, softplus(x) for
  the others; ignored pixels contribute 0 in every class. The sum over pixels and classes is
  divided by C times the non-ignored pixels (avg_non_ignore=True, segjax's default) or by
  B * H * W * C (False, mmseg's default). No class_weight: mmseg 1.2.2 hands it to torch as a
  (C,) `pos_weight`, which broadcasts over the width of an NCHW map and fails.
  """
  logits, labels, valid = _prepare(logits, labels)
  num_classes = logits.shape[-1]
  target = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # 255 -> all zeros
  loss = (1.0 - target) * logits + jax.nn.softplus(-logits)  # softplus(-x) or softplus(x)
  total = jnp.sum(loss * valid[..., None])
  if avg_non_ignore:
    return total / jnp.maximum(jnp.sum(valid) * num_classes, 1)
  return total / (labels.size * num_classes)


def _ohem_kept(logits, labels, valid, pixel_losses, thresh: Optional[float], batch_kept: int):
  """1.0 for the pixels that keep their loss under online hard example mining (mmseg's
  OHEMPixelSampler.sample with batch_kept = min_kept * B; its OhemCrossEntropy class with
  batch_kept = min_kept).

  With `thresh`: the non-ignored pixels whose softmax probability of their label is below
  max(thresh, the batch_kept-th smallest such probability (0-based), or the largest when there
  are fewer pixels), so about batch_kept pixels are kept, more when many are hard.
  Without: the batch_kept non-ignored pixels of largest loss. Ranked over the global batch.
  """
  flat_valid = valid.reshape(-1)
  n = flat_valid.size
  if thresh is None:
    score = jnp.where(flat_valid, pixel_losses.reshape(-1), -jnp.inf)
    order = jnp.argsort(-score)  # descending loss; ignored pixels last
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    kept = flat_valid & (rank < batch_kept)
  else:
    safe = jnp.where(valid, labels, 0)
    prob = jnp.take_along_axis(jax.nn.softmax(logits), safe[..., None], axis=-1).reshape(-1)
    ascending = jnp.sort(jnp.where(flat_valid, prob, jnp.inf))  # ignored pixels last
    n_valid = jnp.sum(flat_valid)
    index = jnp.clip(jnp.minimum(min(batch_kept, n - 1), n_valid - 1), 0, n - 1)
    min_threshold = jnp.where(n_valid > 0, ascending[index], 0.0)
    kept = flat_valid & (prob < jnp.maximum(min_threshold, thresh))
  return kept.reshape(labels.shape).astype(jnp.float32)


@_register("ohem_cross_entropy")
def ohem_cross_entropy(logits: jax.Array, labels: jax.Array, thresh: Optional[float] = 0.7,
                       min_kept: int = 100000, class_weight=None, label_smoothing: float = 0.0,
                       avg_non_ignore: bool = True) -> jax.Array:
  """Cross-entropy on hard pixels only (online hard example mining, Shrivastava et al.,
  "Training Region-based Object Detectors with Online Hard Example Mining", 2016, applied per
  pixel): mmseg's `sampler=dict(type="OHEMPixelSampler", thresh, min_kept)` feeding its pixel
  weights to CrossEntropyLoss.

  The loss is not re-averaged over the kept pixels: as in mmseg, the kept pixels' losses are
  summed and divided by the same avg_factor as `cross_entropy` (all or non-ignored pixels, or
  their class weights), so the loss shrinks as fewer pixels are hard. thresh=None ranks by loss
  instead of probability (mmseg's `thresh=None`). The selection receives no gradient. This is
  not mmseg's `OhemCrossEntropy` class (min_kept per batch, mean over kept pixels): that is
  `ohem_mean_cross_entropy`.
  """
  if min_kept <= 1:
    raise ValueError(f"min_kept must be > 1 (mmseg's OHEMPixelSampler asserts it), got {min_kept}")
  logits, labels, valid = _prepare(logits, labels)
  weight = _class_weight(class_weight, logits.shape[-1])
  pixel = _pixel_cross_entropy(logits, labels, valid, weight, label_smoothing)
  kept = jax.lax.stop_gradient(_ohem_kept(jax.lax.stop_gradient(logits), labels, valid,
                                          jax.lax.stop_gradient(pixel), thresh,
                                          min_kept * labels.shape[0]))
  return _cross_entropy_mean(pixel * kept, labels, valid, weight, avg_non_ignore)


def _ohem_mean(logits, labels, valid, thresh: float, min_kept: int, class_weight):
  """`ohem_mean_cross_entropy` on logits already at the labels' size."""
  if thresh is None:
    raise ValueError("thresh must be a probability (mmseg's OhemCrossEntropy compares "
                     "max(min_value, thresh)), got None")
  weight = _class_weight(class_weight, logits.shape[-1])
  pixel = _pixel_cross_entropy(logits, labels, valid, weight, 0.0)
  kept = jax.lax.stop_gradient(_ohem_kept(jax.lax.stop_gradient(logits), labels, valid, None,
                                          thresh, max(1, int(min_kept))))
  return jnp.sum(pixel * kept) / jnp.maximum(jnp.sum(kept), 1.0)


@_register("ohem_mean_cross_entropy")
def ohem_mean_cross_entropy(logits: jax.Array, labels: jax.Array, thresh: float = 0.7,
                            min_kept: int = 100000, class_weight=None) -> jax.Array:
  """Cross-entropy averaged over the hard pixels only: mmseg's `OhemCrossEntropy` loss class
  (from PIDNet's criterion, github.com/XuJiacong/PIDNet utils/criterion.py), which mmseg's
  DDRNet and PIDNet configs train with.

  Kept: the labelled pixels whose softmax probability of their label is below max(thresh,
  the min_kept-th smallest such probability over the whole batch, 0-based, or the largest
  when there are fewer pixels). The loss is the plain mean over the kept pixels of
  w[y] * CE: class weights scale each pixel's term but, unlike `cross_entropy`'s weighted
  mean, do not enter the divisor. It differs from `ohem_cross_entropy` (mmseg's
  OHEMPixelSampler) in all three places: min_kept counts over the batch, not per image; the
  mean is over the kept pixels, not all (or all labelled) ones; thresh cannot be None. The
  selection gets no gradient. Where no pixel is kept mmseg returns NaN (a mean of nothing),
  segjax 0. mmseg's 2-GPU runs rank and average each GPU's 6 crops and average the two
  GPUs' gradients; segjax ranks and averages the global batch. With min_kept 131072 against
  6.3M pixels per GPU the probability threshold decides while more than about 2% of the
  pixels are below it, and then the kept pixels are the same; the mean weighs each kept pixel
  equally instead of each GPU's half.
  """
  logits, labels, valid = _prepare(logits, labels)
  return _ohem_mean(logits, labels, valid, thresh, min_kept, class_weight)


@_register("boundary_ohem_cross_entropy")
def boundary_ohem_cross_entropy(logits: jax.Array, labels: jax.Array,
                                boundary_threshold: float = 0.8, thresh: float = 0.7,
                                min_kept: int = 100000, class_weight=None) -> jax.Array:
  """PIDNet's boundary-awareness term (Xu et al. 2023, eq. 5; mmseg's PIDHead `loss_sem_bd`):
  `ohem_mean_cross_entropy` on the pixels its boundary branch marks as edges,
  sigmoid(boundary logit) > boundary_threshold, every other pixel ignored.

  logits: the class logits with the boundary logit appended as the last channel (C + 1
  channels: PIDHead's third extra output), resized to the labels together (bilinear is
  per channel, so the boundary logit is resized as mmseg resizes it). The boundary logit
  only selects pixels and gets no gradient, as mmseg's torch.where on the labels.
  """
  if logits.shape[-1] < 2:
    raise ValueError(f"boundary_ohem_cross_entropy takes the class logits plus one boundary "
                     f"logit (C + 1 channels); this output has {logits.shape[-1]}")
  logits, labels, valid = _prepare(logits, labels)
  edge = jax.lax.stop_gradient(jax.nn.sigmoid(logits[..., -1])) > boundary_threshold
  labels = jnp.where(edge, labels, IGNORE_INDEX)
  return _ohem_mean(logits[..., :-1], labels, valid & edge, thresh, min_kept, class_weight)


# ------------------------------------------------------------------------------------------
# Region losses: focal, dice, Tversky, Lovasz
# ------------------------------------------------------------------------------------------

@_register("focal")
def focal(logits: jax.Array, labels: jax.Array, gamma: float = 2.0, alpha=0.5,
          class_weight=None) -> jax.Array:
  """Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017): mmseg's
  FocalLoss (use_sigmoid=True).

  Each class is a binary problem on its own sigmoid: BCE * (alpha * t + (1 - alpha) * (1 - t)) *
  |t - sigmoid|^gamma, summed with class_weight and divided by B * H * W * C (ignored pixels
  count in the divisor with zero loss, as in mmseg). alpha: one float, or one per class (the
  foreground weight of each class's binary problem, not a class weight).

  mmseg 1.2.2's CPU path with class-id labels takes `one_hot[:, num_classes]` where it means
  `[:, :num_classes]` and fails (open-mmlab/mmsegmentation#3249); this is what its
  `py_sigmoid_focal_loss` and the CUDA path compute with the one-hot target it meant.
  """
  logits, labels, valid = _prepare(logits, labels)
  num_classes = logits.shape[-1]
  alpha = jnp.asarray(alpha, jnp.float32)
  if alpha.ndim and alpha.shape != (num_classes,):
    raise ValueError(f"alpha has {alpha.shape[0]} entries for {num_classes} classes")
  target = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float32)
  p = jax.nn.sigmoid(logits)
  one_minus_pt = (1.0 - p) * target + p * (1.0 - target)
  focal_weight = (alpha * target + (1.0 - alpha) * (1.0 - target)) * one_minus_pt ** gamma
  loss = optax.sigmoid_binary_cross_entropy(logits, target) * focal_weight
  weight = valid[..., None].astype(jnp.float32)
  class_weight = _class_weight(class_weight, num_classes)
  if class_weight is not None:
    weight = weight * class_weight
  return jnp.mean(loss * weight)


@_register("dice")
def dice(logits: jax.Array, labels: jax.Array, use_sigmoid: bool = True, activate: bool = True,
         naive_dice: bool = False, eps: float = 1e-3, per_class: bool = False,
         include_background: bool = False) -> jax.Array:
  """Dice loss (Milletari et al., "V-Net", 2016): mmseg 1.2.2's DiceLoss.

  One dice coefficient per image over all its pixels and classes together, averaged over the
  batch: V-Net's 1 - 2|P.T| / (|P|^2 + eps + |T|^2 + eps), or with naive_dice
  1 - (2|P.T| + eps) / (|P| + |T| + eps). P is sigmoid(logits) (use_sigmoid, mmseg's default),
  softmax (use_sigmoid=False), or the raw logits (activate=False). As in mmseg, an ignored
  pixel has an all-zero target but its prediction still counts in |P| (mmseg's one-hot drops
  255, not the pixel); mmseg's `ignore_index` option only drops a class channel of that index,
  which class 255 never is. (The 0.x `smooth` and `exponent` options are gone in 1.2.2.)

  per_class (not in mmseg): the paper's own Dice instead, its eq. 1 D = 2 sum(p g) /
  (sum(p^2) + sum(g^2)) for each (image, class) on its own, with ignored pixels left out of
  both sums, and 1 - D averaged. Classes 1.. only by default: with 2 classes and
  use_sigmoid=False that is V-Net's loss, the foreground's Dice on the softmax (mmseg's
  joint coefficient above also sums the background channel). include_background: class 0
  too (with several foreground classes the foreground terms alone leave the background no
  term of its own). Logits may be images (B, h, w, C) or volumes (B, d, h, w, C).
  """
  logits, labels, valid = _prepare(logits, labels)
  num_classes = logits.shape[-1]
  if include_background and not per_class:
    raise ValueError("include_background applies to per_class=True only")
  if not activate:
    pred = logits
  elif use_sigmoid:
    pred = jax.nn.sigmoid(logits)
  else:
    pred = jax.nn.softmax(logits) if num_classes != 1 else logits
  # Class C (ignored pixels, clamped like mmseg) one-hot-encodes to all zeros.
  target = jax.nn.one_hot(jnp.clip(labels, 0, num_classes), num_classes, dtype=jnp.float32)
  if per_class:
    first = 0 if include_background else 1
    if first >= num_classes:
      raise ValueError("per_class without include_background needs a background class 0 and "
                       "foreground classes 1.., but this output has 1 channel")
    pred = pred[..., first:] * valid[..., None]
    target = target[..., first:]
    axes = tuple(range(1, logits.ndim - 1))  # the pixels: one coefficient per image and class
  else:
    axes = tuple(range(1, logits.ndim))  # pixels and classes: one coefficient per image
  a = jnp.sum(pred * target, axis=axes)
  if naive_dice:
    d = (2 * a + eps) / (jnp.sum(pred, axis=axes) + jnp.sum(target, axis=axes) + eps)
  else:
    d = 2 * a / ((jnp.sum(pred * pred, axis=axes) + eps) +
                 (jnp.sum(target * target, axis=axes) + eps))
  return jnp.mean(1.0 - d)


@_register("tversky")
def tversky(logits: jax.Array, labels: jax.Array, alpha: float = 0.3, beta: float = 0.7,
            smooth: float = 1.0, class_weight=None) -> jax.Array:
  """Tversky loss (Salehi et al., "Tversky loss function for image segmentation using 3D fully
  convolutional deep networks", 2017): mmseg's TverskyLoss.

  Per image and class, on softmax probabilities over non-ignored pixels:
  1 - (TP + smooth) / (TP + alpha FP + beta FN + smooth); averaged over the batch, multiplied by
  class_weight, summed over classes and divided by C. alpha weighs false positives, beta false
  negatives; mmseg requires alpha + beta = 1.
  """
  if abs(alpha + beta - 1.0) > 1e-6:
    raise ValueError(f"alpha + beta must be 1 (mmseg's TverskyLoss asserts it), got "
                     f"{alpha} + {beta}")
  logits, labels, valid = _prepare(logits, labels)
  num_classes = logits.shape[-1]
  pred = jax.nn.softmax(logits)
  target = jax.nn.one_hot(jnp.clip(labels, 0, num_classes - 1), num_classes, dtype=jnp.float32)
  mask = valid[..., None].astype(jnp.float32)
  tp = jnp.sum(pred * target * mask, axis=(1, 2))  # (B, C)
  fp = jnp.sum(pred * (1.0 - target) * mask, axis=(1, 2))
  fn = jnp.sum((1.0 - pred) * target * mask, axis=(1, 2))
  per_class = jnp.mean(1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth), axis=0)
  class_weight = _class_weight(class_weight, num_classes)
  if class_weight is not None:
    per_class = per_class * class_weight
  return jnp.sum(per_class) / num_classes


def _lovasz_softmax_flat(probs, labels, valid, classes, class_weight):
  """mmseg's lovasz_softmax_flat on (P, C) probabilities with static shapes.

  mmseg drops the ignored pixels; here they get error -1, so a descending sort puts them after
  every real error (>= 0) and the sorted prefix is mmseg's; their terms are then zeroed.
  """
  num_classes = probs.shape[-1]
  fg = ((labels[:, None] == jnp.arange(num_classes)) & valid[:, None]).astype(jnp.float32)
  errors = jnp.where(valid[:, None], jnp.abs(fg - probs), -1.0).T  # (C, P)
  order = jnp.argsort(-errors, axis=-1)  # descending; the order gets no gradient
  errors_sorted = jnp.take_along_axis(errors, order, axis=-1)
  fg_sorted = jnp.take_along_axis(fg.T, order, axis=-1)
  valid_sorted = jnp.take_along_axis(jnp.broadcast_to(valid, errors.shape), order, axis=-1)
  # lovasz_grad (Alg. 1 of the paper): the Jaccard loss increments along the sorted errors.
  gts = jnp.sum(fg_sorted, axis=-1, keepdims=True)
  intersection = gts - jnp.cumsum(fg_sorted, axis=-1)
  union = gts + jnp.cumsum(1.0 - fg_sorted, axis=-1)
  jaccard = 1.0 - intersection / union
  grad = jnp.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
  losses = jnp.sum(jnp.where(valid_sorted, errors_sorted, 0.0) * grad, axis=-1)  # (C,)
  if class_weight is not None:
    losses = losses * class_weight
  if classes == "all":
    return jnp.mean(losses)
  if classes == "present":  # mmseg fails when no class is present; that is 0 here
    present = (gts[:, 0] > 0).astype(jnp.float32)
    return jnp.sum(losses * present) / jnp.maximum(jnp.sum(present), 1.0)
  return jnp.mean(losses[jnp.asarray(classes)])


@_register("lovasz")
def lovasz(logits: jax.Array, labels: jax.Array, classes="present", per_image: bool = False,
           class_weight=None) -> jax.Array:
  """Lovasz-Softmax loss (Berman et al., "The Lovasz-Softmax loss: A tractable surrogate for
  the optimization of the intersection-over-union measure in neural networks", 2018): mmseg's
  LovaszLoss(loss_type="multi_class") on softmax probabilities.

  classes: "present" (average over the classes labelled in the batch or image), "all", or a
  tuple of class ids. per_image: one loss per image, averaged over the batch (mmseg's
  reduction="mean"); otherwise one over the whole batch (mmseg's per_image=False, which
  requires reduction="none"). An image without labelled pixels contributes 0.
  """
  if not (classes in ("present", "all") or
          (isinstance(classes, (tuple, list)) and all(isinstance(c, int) for c in classes))):
    raise ValueError(f"classes must be 'present', 'all' or a tuple of class ids, got {classes!r}")
  classes = classes if isinstance(classes, str) else tuple(classes)
  logits, labels, valid = _prepare(logits, labels)
  num_classes = logits.shape[-1]
  if not isinstance(classes, str) and not all(0 <= c < num_classes for c in classes):
    raise ValueError(f"classes {classes} are not all class ids below {num_classes}")
  class_weight = _class_weight(class_weight, num_classes)
  probs = jax.nn.softmax(logits)
  if per_image:
    per = jax.vmap(lambda p, y, v: _lovasz_softmax_flat(
        p.reshape(-1, num_classes), y.reshape(-1), v.reshape(-1), classes, class_weight))
    return jnp.mean(per(probs, labels, valid))
  return _lovasz_softmax_flat(probs.reshape(-1, num_classes), labels.reshape(-1),
                              valid.reshape(-1), classes, class_weight)


# ------------------------------------------------------------------------------------------
# Boundary supervision (PIDNet)
# ------------------------------------------------------------------------------------------

def boundary_target(labels: jax.Array, edge_width: int = 3) -> jax.Array:
  """(B, H, W) float32 boundary map of label maps: mmseg's GenerateEdge transform, batched.

  A pixel is an edge where its label differs from its lower, right, lower-right or lower-left
  neighbour's (marked on the pixel mmseg marks; pairs with an ignored pixel are no edge), then
  dilated by an edge_width x edge_width square anchored at its centre (cv2.dilate's default).
  """
  seg = labels.astype(jnp.int32)
  ignored = seg == IGNORE_INDEX

  def differ(a, b, ia, ib):
    return (a != b) & ~ia & ~ib

  def pad(x, rows, cols):  # back to (B, H, W), on the side mmseg leaves unmarked
    return jnp.pad(x, ((0, 0), rows, cols))

  edge = pad(differ(seg[:, 1:], seg[:, :-1], ignored[:, 1:], ignored[:, :-1]),
             (1, 0), (0, 0))  # "down": row i against row i - 1
  edge |= pad(differ(seg[:, :, :-1], seg[:, :, 1:], ignored[:, :, :-1], ignored[:, :, 1:]),
              (0, 0), (0, 1))  # "left": column j against column j + 1
  edge |= pad(differ(seg[:, :-1, :-1], seg[:, 1:, 1:], ignored[:, :-1, :-1], ignored[:, 1:, 1:]),
              (0, 1), (0, 1))  # "up_left": (i, j) against (i + 1, j + 1)
  edge |= pad(differ(seg[:, :-1, 1:], seg[:, 1:, :-1], ignored[:, :-1, 1:], ignored[:, 1:, :-1]),
              (0, 1), (1, 0))  # "up_right": (i, j) against (i + 1, j - 1)
  before = edge_width // 2  # cv2's default anchor: the kernel's centre, rounded down
  after = edge_width - 1 - before
  return jax.lax.reduce_window(
      edge.astype(jnp.float32), 0.0, jax.lax.max, (1, edge_width, edge_width), (1, 1, 1),
      ((0, 0), (before, after), (before, after)))


@_register("boundary")
def boundary(logits: jax.Array, labels: jax.Array, edge_width: int = 3) -> jax.Array:
  """Class-balanced binary cross-entropy on a 1-channel boundary logit map (Xu et al., "PIDNet:
  A Real-time Semantic Segmentation Network Inspired by PID Controllers", 2023): mmseg's
  BoundaryLoss, with its target derived here from the labels as mmseg's GenerateEdge transform
  does (`boundary_target`; PIDNet's Cityscapes config uses edge_width=4).

  Edge pixels weigh (#non-edge / #pixels), the others (#edge / #pixels), over the whole batch;
  the mean is over all pixels. Ignored pixels are non-edge pixels, as in mmseg's edge map.
  """
  if logits.shape[-1] != 1:
    raise ValueError(f"boundary supervises a 1-channel boundary logit map; this output has "
                     f"{logits.shape[-1]} channels")
  logits, labels, _ = _prepare(logits, labels)
  target = boundary_target(labels, edge_width)
  num_edge = jnp.sum(target)
  num_other = target.size - num_edge
  weight = jnp.where(target == 1, num_other, num_edge) / target.size
  return jnp.mean(weight * optax.sigmoid_binary_cross_entropy(logits[..., 0], target))


# ------------------------------------------------------------------------------------------
# Detail supervision (STDC)
# ------------------------------------------------------------------------------------------

_LAPLACIAN = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))
# Weights of the stride-1, 2 and 4 edge maps in the fused detail map: mmseg's (and the
# official code's) fixed `fusion_kernel`; the paper calls it trainable, but after the
# thresholds it could receive no gradient.
_DETAIL_FUSION = (0.6, 0.3, 0.1)


def detail_target(labels: jax.Array, threshold: float = 0.1) -> jax.Array:
  """(B, H, W) int32 detail ground truth (1 = edge) of label maps: mmseg 1.2.2's
  STDCHead.loss_by_feat (Fan et al. 2021, "Rethinking BiSeNet", Sec. 3.3), batched.

  The label ids themselves are convolved, as floats, with a 3x3 Laplacian (zero padding) at
  strides 1, 2 and 4; the strided maps are upsampled back (nearest, torch's); each map, clamped
  at 0, is thresholded, and the three binary maps are fused with weights 0.6/0.3/0.1 and
  thresholded again, all in float32 as mmseg compares them. So an edge is where a pixel's id
  exceeds its neighbours' mean, and the ignore id 255 makes edges around ignored regions too,
  as in mmseg.
  """
  seg = labels.astype(jnp.float32)[..., None]
  kernel = jnp.asarray(_LAPLACIAN, jnp.float32)[:, :, None, None]
  thresh = jnp.float32(threshold)

  def edges(stride):
    y = jax.lax.conv_general_dilated(seg, kernel, (stride, stride), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    y = resize_nearest(jnp.maximum(y, 0.0), labels.shape[1:3])
    return (y > thresh).astype(jnp.float32)

  fused = sum(jnp.float32(w) * edges(s) for w, s in zip(_DETAIL_FUSION, (1, 2, 4)))
  return (fused[..., 0] > thresh).astype(jnp.int32)


@_register("detail_bce")
def detail_bce(logits: jax.Array, labels: jax.Array, boundary_threshold: float = 0.1
               ) -> jax.Array:
  """Binary cross-entropy of STDC's detail head against `detail_target(labels)`: mmseg's
  CrossEntropyLoss(use_sigmoid=True) as STDCHead applies it. With 2 channels (mmseg's config)
  each is a sigmoid against the one-hot target, averaged over batch, channels and pixels; with
  1 channel, the edge probability against the target. Every pixel counts (the target has no
  ignored pixels)."""
  logits, labels, _ = _prepare(logits, labels)
  target = detail_target(labels, boundary_threshold)
  if logits.shape[-1] == 1:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits[..., 0],
                                                       target.astype(jnp.float32)))
  onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=jnp.float32)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, onehot))


@_register("detail_dice")
def detail_dice(logits: jax.Array, labels: jax.Array, boundary_threshold: float = 0.1,
                eps: float = 1e-3) -> jax.Array:
  """`dice` (mmseg's DiceLoss: sigmoid, V-Net form) of STDC's detail head against
  `detail_target(labels)`, as STDCHead applies it."""
  labels = labels.astype(jnp.int32)
  return dice(logits, detail_target(labels, boundary_threshold), eps=eps)


# ------------------------------------------------------------------------------------------
# Per-head configuration and the training loss
# ------------------------------------------------------------------------------------------

def _hashable(value):
  """Config values as they go into a LossSpec: lists (as command-line overrides give) become
  tuples, so a spec can be a flax module field."""
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


def loss_spec(cfg: Mapping[str, Any], where: str, num_classes: int,
              channels: Optional[int] = None) -> LossSpec:
  """Validates one entry of a head's `loss` list and returns it as a LossSpec.

  Called when the model is built, so a bad entry stops the run before anything is written:
  an unknown name, an unknown option (Registry.build's signature binding) and a bad option
  value are ConfigErrors naming `where` (e.g. "model.auxiliary_head[0].loss[1]"). Values are
  checked by tracing the loss once on an abstract (1, 8, 8, channels) batch, `channels` the
  output's (default num_classes; PIDNet's boundary output has 1, its boundary-aware one C + 1)
  (jax.eval_shape: nothing is computed), so each check lives once, in the loss itself.
  """
  if not hasattr(cfg, "keys"):
    raise ConfigError(f"{where} must be a mapping like {{'name': 'dice', 'weight': 1.0}}, "
                      f"got {cfg!r}")
  cfg = dict(cfg)
  if "name" not in cfg:
    raise ConfigError(f"{where}.name is missing; known losses: {', '.join(LOSSES.names())}")
  try:
    LOSSES.get(cfg["name"])
  except ConfigError as e:
    raise ConfigError(f"{where}.name: {e}") from None
  weight = cfg.pop("weight", 1.0)
  if isinstance(weight, bool) or not isinstance(weight, (int, float)):
    raise ConfigError(f"{where}.weight must be a number, got {weight!r}")
  options = {k: _hashable(v) for k, v in cfg.items() if k != "name"}
  logits = jax.ShapeDtypeStruct((1, 8, 8, channels or num_classes), jnp.float32)
  labels = jax.ShapeDtypeStruct((1, 8, 8), jnp.int32)
  try:
    jax.eval_shape(lambda x, y: LOSSES.build(cfg, where, logits=x, labels=y), logits, labels)
  except (ValueError, TypeError) as e:  # a bad option value, found while tracing
    raise ConfigError(f"{where}: {cfg['name']}: {e}") from None
  return cfg["name"], float(weight), tuple(sorted(options.items()))


def _output_loss(logits, labels, specs: Sequence[LossSpec], key: str, parts: dict):
  """Σ weight * loss over one output's specs; records parts[key] and, for several losses,
  parts[key_<name>] (weighted; same-named entries summed, like mmseg's loss dict)."""
  total = None
  for name, weight, options in specs:
    value = weight * LOSSES.get(name)(logits, labels, **dict(options))
    if len(specs) > 1:
      part = f"{key}_{name}"
      parts[part] = parts[part] + value if part in parts else value
    total = value if total is None else total + value
  parts[key] = total
  return total


def segmentation_loss(logits: jax.Array, aux_logits: Sequence[jax.Array], labels: jax.Array,
                      aux_weights: Sequence[float],
                      output_losses: Sequence[Sequence[LossSpec]] = (),
                      align_corners: Sequence[bool] = ()):
  """The training loss of a model's outputs; returns (total, {name: value}).

  output_losses: the model's `output_losses` (segjax.models.segmentor.EncoderDecoder), one
  tuple of LossSpecs per output: the main logits, then each auxiliary output in the order of
  `aux_weights`. Empty (a whole model that carries none) = `DEFAULT_LOSSES` on every output.
  total = main + Σ_i aux_weights[i] * aux_i, where each output's value is Σ weight * loss over
  its specs. Parts: "loss_main", "loss_aux{i}", plus "loss_main_<name>" /
  "loss_aux{i}_<name>" for an output with several losses.

  align_corners: the model's `align_corners`, one bool per output in the same order (() = all
  False): an output marked True is upsampled to the labels with corners aligned (mmseg's
  head `align_corners=True`) before its losses, whose own resize then has nothing to do.
  """
  outputs = (logits, *aux_logits)
  output_losses = tuple(output_losses) or (DEFAULT_LOSSES,) * len(outputs)
  if len(output_losses) != len(outputs):
    raise ValueError(f"{len(output_losses)} output_losses for {len(outputs)} model outputs")
  weights = (1.0, *aux_weights)
  if len(weights) != len(outputs):
    raise ValueError(f"{len(aux_weights)} aux_weights for {len(aux_logits)} auxiliary outputs")
  keys = ["loss_main"] + [f"loss_aux{i}" for i in range(len(aux_logits))]
  aligned = tuple(align_corners) or (False,) * len(outputs)
  if len(aligned) != len(outputs):
    raise ValueError(f"{len(aligned)} align_corners flags for {len(outputs)} model outputs")
  parts = {}
  total = None
  for output, specs, weight, key, corners in zip(outputs, output_losses, weights, keys, aligned):
    if corners:
      output = resize_linear(output, labels.shape[1:], align_corners=True)
    value = _output_loss(output, labels, specs, key, parts)
    total = value if total is None else total + weight * value
  return total, parts
