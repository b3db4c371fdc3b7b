"""Segmentation metrics from one confusion matrix summed over a whole split.

Per-batch averages of IoU are biased (small batches weigh rare classes wrongly); summing the
confusion matrix over every image and device, then deriving IoU once, is the standard
(mmseg IoUMetric, cityscapesScripts).
"""
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_INDEX = 255


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


def summarize(cm: np.ndarray, class_names: Sequence[str]) -> Dict[str, object]:
  """aAcc, mAcc, mIoU and per-class IoU/Acc from a confusion matrix.

  Classes absent from both ground truth and predictions have an undefined IoU (NaN, reported
  as None) and are left out of the means, as in mmseg.
  """
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  gt = cm.sum(1)
  pred = cm.sum(0)
  union = gt + pred - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
    acc = np.where(gt > 0, tp / gt, np.nan)
  total = cm.sum()
  nan_to_none = lambda x: None if np.isnan(x) else float(x)  # noqa: E731
  return {
      "aAcc": float(tp.sum() / total) if total else float("nan"),
      "mAcc": float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan"),
      "mIoU": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
      "IoU": {n: nan_to_none(v) for n, v in zip(class_names, iou)},
      "Acc": {n: nan_to_none(v) for n, v in zip(class_names, acc)},
      "num_pixels": int(total),
  }
