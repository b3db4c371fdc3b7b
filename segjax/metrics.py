"""Segmentation metrics from counts summed over a whole split.

Per-batch averages of IoU are biased (small batches weigh rare classes wrongly); summing the
confusion matrix over every image and device, then deriving every score once, is the
standard (mmseg IoUMetric, cityscapesScripts). The device side only counts
(`confusion_matrix`, `boundary_counts`, int32 per batch); the host adds the counts up in
int64 (Cityscapes' road class alone is ~2e9 pixels) and `summarize` turns them into scores.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

# Named in the docstrings: the ignore label, one of the labels >= num_classes no count includes.
from segjax.data.base import IGNORE_INDEX  # noqa: F401


def confusion_matrix(preds: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """(num_classes, num_classes) int32 counts, rows = ground truth, cols = prediction.

  Pixels labelled `IGNORE_INDEX` (or any value >= num_classes) are not counted.
  """
  labels = labels.astype(jnp.int32).reshape(-1)
  preds = preds.astype(jnp.int32).reshape(-1)
  valid = labels < num_classes
  idx = jnp.where(valid, labels * num_classes + preds, 0)
  counts = jnp.bincount(idx, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


# ---------------------------------------------------------------------------------------------
# Boundary IoU (Cheng et al. 2021)
# ---------------------------------------------------------------------------------------------


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
  """The band width d of Boundary IoU: round(ratio * image diagonal), at least 1 pixel.

  Written exactly as the reference `mask_to_boundary` (boundary-iou-api,
  boundary_iou/utils/boundary_utils.py) so that Python's round-half-to-even agrees too.
  """
  return max(1, int(round(dilation_ratio * math.sqrt(height ** 2 + width ** 2))))


def _all_ones_in_window(x: jax.Array, d: int, axis: int) -> jax.Array:
  """1 where the 2d+1 values of x (0/1 int32) centred on each position along `axis` are all
  1, with zeros beyond the array: one cumulative sum and a difference, so the cost does not
  grow with d (d is ~46 at 1024x2048, a 93-wide window)."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (d + 1, d)  # the leading extra zero makes window sums c[i + 2d + 1] - c[i]
  c = jnp.cumsum(jnp.pad(x, pad), axis=axis, dtype=jnp.int32)
  window = (jax.lax.slice_in_dim(c, 2 * d + 1, 2 * d + 1 + n, axis=axis)
            - jax.lax.slice_in_dim(c, 0, n, axis=axis))
  return (window == 2 * d + 1).astype(jnp.int32)


def _inner_boundary(masks: jax.Array, d: int) -> jax.Array:
  """The reference `mask_to_boundary` of binary masks (B, H, W, C): mask minus its erosion.

  The reference pads one zero pixel around the image and erodes d times with a 3x3 square
  (cv2, whose own border counts as 1 in an erosion); that equals one erosion by a
  (2d+1)x(2d+1) square with zeros outside the image, so a mask cut by the image border has a
  band along it. A square erosion is separable: rows, then columns.
  """
  x = masks.astype(jnp.int32)
  eroded = _all_ones_in_window(_all_ones_in_window(x, d, axis=1), d, axis=2)
  return masks & (eroded == 0)


def boundary_counts(preds: jax.Array, labels: jax.Array, num_classes: int,
                    dilation_ratio: float = 0.02,
                    dilation: Optional[int] = None) -> Tuple[jax.Array, jax.Array]:
  """Per-class intersection and union (int32 [C] each) of Boundary IoU bands over a batch.

  For class c, the ground-truth band is `mask_to_boundary(labels == c)` and the predicted
  band `mask_to_boundary(preds == c)`: the pixels of the mask within d pixels of its outside
  (image border included), d = round(dilation_ratio * diagonal of the (H, W) image). The
  counts are summed over the batch, to be added up over a split like a confusion matrix
  (Boundary IoU of a class = intersection / union of the sums).

  Ignored pixels (`IGNORE_INDEX`, any label >= num_classes) are left out of both counts, as
  from the confusion matrix. They still shape the bands: an ignore region is "not c" in
  `labels == c`, so class c has a ground-truth band along an ignore region it touches, as
  the reference computes it on the class mask; only the band pixels that are themselves
  ignored (none of the ground-truth band, some of the predicted one) are dropped.

  Args:
    preds: (B, H, W) predicted class ids.
    labels: (B, H, W) ground-truth class ids, IGNORE_INDEX = ignore.
    num_classes: C.
    dilation_ratio: band width as a fraction of the image diagonal (0.02 in the paper).
    dilation: band width in pixels, overriding dilation_ratio. For images padded to a
      common size: the ratio would otherwise apply to the padded diagonal, and the padding
      should then hold a label >= num_classes in `preds` too, so that it acts as the image
      border for both bands.

  Returns:
    (intersection, union), int32 [C]. H and W are static, so d is a Python int and the
    whole function jits; its cost per pixel does not depend on d.
  """
  if preds.shape != labels.shape or preds.ndim != 3:
    raise ValueError(f"boundary_counts wants preds and labels of one shape (B, H, W); got "
                     f"{preds.shape} and {labels.shape}")
  if dilation is None:
    dilation = boundary_dilation(labels.shape[1], labels.shape[2], dilation_ratio)
  labels = labels.astype(jnp.int32)
  classes = jnp.arange(num_classes, dtype=jnp.int32)
  gt_band = _inner_boundary(labels[..., None] == classes, dilation)
  pred_band = _inner_boundary(preds.astype(jnp.int32)[..., None] == classes, dilation)
  valid = (labels < num_classes)[..., None]
  intersection = jnp.sum(gt_band & pred_band & valid, axis=(0, 1, 2), dtype=jnp.int32)
  union = jnp.sum((gt_band | pred_band) & valid, axis=(0, 1, 2), dtype=jnp.int32)
  return intersection, union


# ---------------------------------------------------------------------------------------------
# Scores from summed counts
# ---------------------------------------------------------------------------------------------


def _nanmean(x: np.ndarray) -> float:
  """Mean over the defined (non-NaN) entries; NaN, without a warning, when none is."""
  return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def _per_class(names: Sequence[str], values: np.ndarray) -> Dict[str, Optional[float]]:
  """{class: value}, undefined (NaN) values as None so the dict survives JSON."""
  return {n: None if np.isnan(v) else float(v) for n, v in zip(names, values)}


def summarize(cm, class_names: Sequence[str],
              boundary: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, object]:
  """Every score of a split from its confusion matrix (and Boundary IoU counts).

  Per class, with I = TP, P = predicted pixels, G = ground-truth pixels, U = P + G - I, the
  scores are mmseg 1.2.2 IoUMetric's (`total_area_to_metrics`, beta = 1), NaN included:
  IoU = I/U, Acc = Recall = I/G, Dice = 2I/(P+G), Precision = I/P,
  Fscore = 2 * Precision * Recall / (Precision + Recall). A ratio with a zero denominator
  is NaN (reported as None) and left out of its mean (mIoU, mAcc, mDice, mFscore,
  mPrecision, mRecall): a class absent from ground truth and predictions has no IoU or Dice,
  a class only predicted has IoU 0 and counts in mIoU. Fscore is NaN, as in mmseg, also
  where Precision and Recall are both 0 (a class in ground truth and predictions that never
  overlap), where Dice, mathematically the same F1, is 0.

  aAcc = sum(I) / sum(G). FWIoU is the "frequency weighted IU" of the FCN paper (Long et
  al. 2015, Sec. 5; mmseg has none): sum_c G_c * IoU_c / sum_c G_c. A class without IoU has
  G_c = 0 and so weighs nothing.

  With `boundary` = (intersection, union) summed from `boundary_counts`: per-class BIoU =
  intersection / union (None where union is 0, i.e. the class has no band in ground truth or
  prediction) and mBIoU, their mean over the defined classes.

  Args:
    cm: (C, C) counts, rows = ground truth: int32 from one batch or, summed over a split,
      int64 (numpy or jax); exact as long as counts stay below 2**53.
    class_names: C names, the keys of the per-class dicts.
    boundary: optional (intersection [C], union [C]) counts.

  Returns:
    aAcc, mAcc, mIoU, FWIoU, mDice, mFscore, mPrecision, mRecall (floats, NaN when
    undefined), per-class dicts IoU, Acc, Dice, Fscore, Precision, Recall (None when
    undefined), num_pixels (the counted, non-ignored pixels) and, with `boundary`, mBIoU
    and BIoU.
  """
  cm = np.asarray(cm)
  num_classes = len(class_names)
  if cm.shape != (num_classes, num_classes):
    raise ValueError(f"confusion matrix of shape {cm.shape} for {num_classes} class names")
  cm = cm.astype(np.int64)
  tp = np.diag(cm)
  gt = cm.sum(1)
  pred = cm.sum(0)
  union = gt + pred - tp
  total = int(gt.sum())
  f = lambda a: a.astype(np.float64)  # noqa: E731  (ratios of exact integer counts)
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = f(tp) / f(union)
    acc = f(tp) / f(gt)
    dice = 2 * f(tp) / f(pred + gt)
    precision = f(tp) / f(pred)
    recall = acc
    fscore = 2 * precision * recall / (precision + recall)
    fwiou = float(np.sum(np.where(gt > 0, f(gt) * iou, 0.0)) / total) if total else float("nan")
  results = {
      "aAcc": float(tp.sum() / total) if total else float("nan"),
      "mAcc": _nanmean(acc),
      "mIoU": _nanmean(iou),
      "FWIoU": fwiou,
      "mDice": _nanmean(dice),
      "mFscore": _nanmean(fscore),
      "mPrecision": _nanmean(precision),
      "mRecall": _nanmean(recall),
      "IoU": _per_class(class_names, iou),
      "Acc": _per_class(class_names, acc),
      "Dice": _per_class(class_names, dice),
      "Fscore": _per_class(class_names, fscore),
      "Precision": _per_class(class_names, precision),
      "Recall": _per_class(class_names, recall),
      "num_pixels": total,
  }
  if boundary is not None:
    b_inter, b_union = (np.asarray(x).astype(np.int64) for x in boundary)
    if b_inter.shape != (num_classes,) or b_union.shape != (num_classes,):
      raise ValueError(f"boundary counts of shapes {b_inter.shape}, {b_union.shape} for "
                       f"{num_classes} class names")
    with np.errstate(invalid="ignore", divide="ignore"):
      biou = f(b_inter) / f(b_union)
    results["mBIoU"] = _nanmean(biou)
    results["BIoU"] = _per_class(class_names, biou)
  return results


# Per-class columns of the log table: the key in summarize's results and its mean's key.
_COLUMNS = (("IoU", "mIoU"), ("Acc", "mAcc"), ("Dice", "mDice"), ("Fscore", "mFscore"),
            ("Precision", "mPrecision"), ("Recall", "mRecall"), ("BIoU", "mBIoU"))


def format_table(results: Dict[str, object], class_names: Sequence[str]) -> str:
  """summarize's results as a plain-text table for the log, in percent with 2 decimals.

  One row per class (IoU, Acc, Dice, Fscore, Precision, Recall, and BIoU when computed),
  undefined values as "nan" like mmseg's PrettyTable, then one line of the split's scores, so
  a log reads like mmseg's and its numbers can be compared directly.
  """
  columns = [(k, m) for k, m in _COLUMNS if k in results]
  pct = lambda v: "nan" if v is None or np.isnan(v) else f"{100 * v:.2f}"  # noqa: E731
  header = ["Class"] + [k for k, _ in columns]
  rows = [[name] + [pct(results[k].get(name)) for k, _ in columns] for name in class_names]
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
  line = lambda r: "| " + " | ".join(  # noqa: E731
      c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
  summary = ["aAcc", "mIoU", "mAcc", "FWIoU"] + [m for _, m in columns if m not in
                                                 ("mIoU", "mAcc")]
  summary_line = "  ".join(f"{k} {pct(results[k])}" for k in summary if k in results)
  pixels = results.get("num_pixels")
  if pixels is not None:
    summary_line += f"  ({pixels} pixels)"
  return "\n".join([rule, line(header), rule] + [line(r) for r in rows] + [rule, summary_line])
