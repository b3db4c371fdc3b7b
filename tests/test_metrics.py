"""Metrics against their references: mmseg 1.2.2's IoUMetric, cityscapesScripts 2.3.0's
pixel-level evaluation, the Boundary IoU API's `mask_to_boundary`, an independent numpy
loop, and definitions worked by hand."""
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import metrics
from segjax.data import cityscapes
from tests.conftest import require
from tests.mmseg_reference import import_mmseg

PER_CLASS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


def numpy_iou(preds, labels, num_classes):
  """Independent: per-class intersection / union with explicit loops."""
  ious, accs = [], []
  valid = labels != 255
  for c in range(num_classes):
    p, g = (preds == c) & valid, (labels == c) & valid
    union = (p | g).sum()
    ious.append((p & g).sum() / union if union else np.nan)
    accs.append((p & g).sum() / g.sum() if g.sum() else np.nan)
  aacc = ((preds == labels) & valid).sum() / valid.sum()
  return np.array(ious), np.array(accs), aacc


def blobs(rng, shape, num_values, cell=6):
  """Piecewise-constant random maps (values 0..num_values-1): regions with real boundaries,
  unlike per-pixel noise, whose every pixel is boundary."""
  *lead, h, w = shape
  coarse = rng.randint(0, num_values, (*lead, -(-h // cell), -(-w // cell)))
  return np.repeat(np.repeat(coarse, cell, -2), cell, -1)[..., :h, :w]


def assert_matches(got, want, what):
  """A per-class value of summarize (None = undefined) against a reference's (NaN)."""
  assert (got is None) == bool(np.isnan(want)), (what, got, want)
  if got is not None:
    np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=what)


def test_confusion_matrix_metrics_match_numpy():
  rng = np.random.RandomState(0)
  nc = 6
  labels = rng.randint(0, nc, (4, 17, 23))
  labels[rng.rand(*labels.shape) < 0.2] = 255
  labels[labels == 5] = 255  # class 5 absent from ground truth
  preds = np.where(rng.rand(*labels.shape) < 0.6, labels, rng.randint(0, nc - 1, labels.shape))
  preds = np.where(preds == 255, 0, preds)
  # Accumulate over two "batches" as evaluation does.
  cm = sum(np.asarray(metrics.confusion_matrix(jnp.asarray(preds[i:i + 2]),
                                               jnp.asarray(labels[i:i + 2]), nc))
           for i in (0, 2))
  assert cm.sum() == (labels != 255).sum()
  out = metrics.summarize(cm, [f"c{i}" for i in range(nc)])
  ious, accs, aacc = numpy_iou(preds, labels, nc)
  np.testing.assert_allclose(out["mIoU"], np.nanmean(ious), rtol=1e-12)
  np.testing.assert_allclose(out["mAcc"], np.nanmean(accs), rtol=1e-12)
  np.testing.assert_allclose(out["aAcc"], aacc, rtol=1e-12)
  for i in range(nc):
    got = out["IoU"][f"c{i}"]
    assert (got is None) == np.isnan(ious[i])
    if got is not None:
      np.testing.assert_allclose(got, ious[i], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# mmseg 1.2.2 IoUMetric
# ---------------------------------------------------------------------------------------------


def test_summarize_matches_mmseg_iou_metric():
  import_mmseg()
  import torch
  from mmseg.evaluation.metrics import IoUMetric
  rng = np.random.RandomState(1)
  nc = 7
  names = [f"c{i}" for i in range(nc)]
  labels = rng.randint(0, 5, (3, 19, 23))
  labels[rng.rand(*labels.shape) < 0.15] = 255
  preds = np.where(rng.rand(*labels.shape) < 0.6, labels, rng.randint(0, 5, labels.shape))
  preds = np.where(preds == 255, 1, preds)
  preds[labels == 4] = 2  # class 4: in both ground truth and predictions, never overlapping
  preds[0, 0, :5] = 4
  labels[0, 0, :5] = 3
  preds[1, 2:6, 3:9] = 5  # class 5: predicted, absent from ground truth; class 6: in neither
  # Counts as evaluation makes them: int32 per batch, summed in int64 on the host.
  cm = sum(np.asarray(metrics.confusion_matrix(jnp.asarray(p), jnp.asarray(g), nc),
                      np.int64) for p, g in zip(preds, labels))
  out = metrics.summarize(cm, names)

  # mmseg's IoUMetric.process / compute_metrics, per image then summed; float64 so that
  # the comparison is of the formulas, not of float32 rounding.
  areas = [IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(g), nc, 255)
           for p, g in zip(preds, labels)]
  totals = [sum(a[i] for a in areas).double() for i in range(4)]
  ref = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU", "mDice", "mFscore"])
  np.testing.assert_allclose(out["aAcc"], ref["aAcc"], rtol=1e-10)
  for key in PER_CLASS:
    for i, name in enumerate(names):
      assert_matches(out[key][name], ref[key][i], f"{key}[{name}]")
    np.testing.assert_allclose(out["m" + key], np.nanmean(ref[key]), rtol=1e-10, err_msg=key)
  # The cases the sample was built for, spelled out.
  assert out["IoU"]["c5"] == 0.0 and out["Acc"]["c5"] is None
  assert out["IoU"]["c6"] is None and out["Dice"]["c6"] is None
  assert out["Dice"]["c4"] == 0.0 and out["Fscore"]["c4"] is None  # mmseg's 0/0 F-score
  assert out["num_pixels"] == (labels != 255).sum()
  # The int32 matrix of one device batch gives the same numbers.
  cm32 = metrics.confusion_matrix(jnp.asarray(preds), jnp.asarray(labels), nc)
  assert metrics.summarize(cm32, names)["mFscore"] == out["mFscore"]


def test_fwiou_and_int64_counts_by_hand():
  names = ["a", "b", "absent", "only_predicted"]
  cm = np.array([[50, 10, 0, 0],
                 [5, 30, 0, 5],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]], np.int64) * 10 ** 8  # counts past int32, as on Cityscapes
  out = metrics.summarize(cm, names)
  # gt = (60, 40, 0, 0), pred = (55, 40, 0, 5), tp = (50, 30, 0, 0).
  for name, iou in zip(names, [50 / 65, 30 / 50, np.nan, 0.0]):
    assert_matches(out["IoU"][name], iou, name)
  np.testing.assert_allclose(out["FWIoU"], (60 * 50 / 65 + 40 * 30 / 50) / 100, rtol=1e-12)
  np.testing.assert_allclose(out["mIoU"], (50 / 65 + 30 / 50) / 3, rtol=1e-12)
  np.testing.assert_allclose(out["aAcc"], 0.8, rtol=1e-12)
  assert out["num_pixels"] == 100 * 10 ** 8
  assert out["Precision"]["only_predicted"] == 0.0 and out["Recall"]["only_predicted"] is None
  assert out["Dice"]["only_predicted"] == 0.0 and out["Fscore"]["only_predicted"] is None
  np.testing.assert_allclose(out["Dice"]["b"], 60 / 80, rtol=1e-12)
  # No pixels at all: every score undefined, nothing raises or warns.
  empty = metrics.summarize(np.zeros((4, 4), np.int64), names)
  assert np.isnan(empty["FWIoU"]) and np.isnan(empty["mIoU"]) and empty["num_pixels"] == 0


# ---------------------------------------------------------------------------------------------
# cityscapesScripts 2.3.0
# ---------------------------------------------------------------------------------------------


def test_cityscapes_iou_matches_cityscapesscripts(tmp_path):
  require("cityscapesscripts")
  from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
  from cityscapesscripts.helpers.labels import trainId2label
  from PIL import Image
  rng = np.random.RandomState(2)
  lut = cityscapes.label_lut()
  pred_files, gt_files, cm = [], [], np.zeros((19, 19), np.int64)
  for i, (h, w) in enumerate([(24, 40), (30, 36), (24, 40)]):
    gt = blobs(rng, (h, w), 34, cell=4).astype(np.uint8)  # labelIds 0..33, ignored ones too
    gt[gt == 31] = 0  # trainId 16 (train): in neither ground truth nor predictions
    gt[gt == 28] = 7  # trainId 15 (bus): predicted only
    gt_train = lut[gt]
    pred = np.where(rng.rand(h, w) < 0.7, gt_train, blobs(rng, (h, w), 19, cell=3))
    pred = np.where(pred == 255, 0, pred)
    pred[pred == 16] = 1
    pred[0, :4] = 15
    assert (pred < 19).all()
    to_label_id = np.array([trainId2label[t].id for t in range(19)], np.uint8)
    pred_files.append(str(tmp_path / f"c_{i:06d}_pred.png"))
    gt_files.append(str(tmp_path / f"c_{i:06d}_gtFine_labelIds.png"))
    Image.fromarray(to_label_id[pred]).save(pred_files[-1])
    Image.fromarray(gt).save(gt_files[-1])
    cm += np.asarray(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(gt_train), 19))

  args = cs_eval.CArgs()
  args.__dict__.update(vars(cs_eval.args))
  args.__dict__.update(evalInstLevelScore=False, evalPixelAccuracy=False, JSONOutput=False,
                       quiet=True, colorized=False, bold="", nocol="",
                       exportFile=str(tmp_path / "result.json"))
  ref = cs_eval.evaluateImgLists(pred_files, gt_files, args)
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [f.split("/")[-1] for f in pred_files + gt_files])  # it wrote nothing

  out = metrics.summarize(cm, cityscapes.CLASS_NAMES)
  for t, name in enumerate(cityscapes.CLASS_NAMES):
    assert trainId2label[t].name == name
    assert_matches(out["IoU"][name], ref["classScores"][name], name)
  assert out["IoU"]["bus"] == 0.0 and out["IoU"]["train"] is None
  np.testing.assert_allclose(out["mIoU"], ref["averageScoreClasses"], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Boundary IoU (boundary-iou-api)
# ---------------------------------------------------------------------------------------------


def reference_mask_to_boundary(mask, dilation_ratio=0.02):
  """boundary_iou/utils/boundary_utils.py's mask_to_boundary, transcribed line by line."""
  import cv2
  h, w = mask.shape
  img_diag = np.sqrt(h ** 2 + w ** 2)
  dilation = int(round(dilation_ratio * img_diag))
  if dilation < 1:
    dilation = 1
  new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
  kernel = np.ones((3, 3), dtype=np.uint8)
  new_mask_erode = cv2.erode(new_mask, kernel, iterations=dilation)
  mask_erode = new_mask_erode[1:h + 1, 1:w + 1]
  return mask - mask_erode


def reference_boundary_counts(preds, labels, num_classes, dilation_ratio):
  """Per image and class: the reference's bands of the class masks, counted on the
  non-ignored pixels, summed over the images."""
  inter, union = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
  for pred, label in zip(preds, labels):
    valid = label < num_classes
    for c in range(num_classes):
      g = reference_mask_to_boundary((label == c).astype(np.uint8), dilation_ratio) > 0
      p = reference_mask_to_boundary((pred == c).astype(np.uint8), dilation_ratio) > 0
      inter[c] += np.sum(g & p & valid)
      union[c] += np.sum((g | p) & valid)
  return inter, union


@pytest.mark.parametrize("shape", [(37, 53), (64, 48)])
@pytest.mark.parametrize("dilation_ratio", [0.02, 0.1])
def test_boundary_counts_match_reference_api(shape, dilation_ratio):
  require("cv2")
  rng = np.random.RandomState(shape[0])
  nc = 5
  labels = blobs(rng, (3, *shape), 4, cell=7)  # class 4: in neither
  labels[0, 5:17, 9:30] = 255  # an ignore region with boundaries of its own
  labels[rng.rand(*labels.shape) < 0.05] = 255  # and scattered ignored pixels
  preds = np.where(rng.rand(*labels.shape) < 0.1, blobs(rng, labels.shape, 4, cell=5),
                   np.where(labels == 255, 2, labels))
  preds[1] = np.roll(preds[1], 2, axis=1)  # shifted boundaries
  inter, union = metrics.boundary_counts(jnp.asarray(preds), jnp.asarray(labels), nc,
                                         dilation_ratio)
  assert inter.dtype == jnp.int32 and union.dtype == jnp.int32
  ref_inter, ref_union = reference_boundary_counts(preds, labels, nc, dilation_ratio)
  np.testing.assert_array_equal(inter, ref_inter)
  np.testing.assert_array_equal(union, ref_union)
  assert ref_union[4] == 0 and np.all(ref_inter[:4] > 0)
  assert np.all(ref_inter[:4] < ref_union[:4])

  names = [f"c{i}" for i in range(nc)]
  out = metrics.summarize(np.eye(nc, dtype=np.int64), names, boundary=(inter, union))
  biou = ref_inter[:4] / ref_union[:4]
  for c in range(4):
    np.testing.assert_allclose(out["BIoU"][f"c{c}"], biou[c], rtol=1e-12)
  assert out["BIoU"]["c4"] is None
  np.testing.assert_allclose(out["mBIoU"], biou.mean(), rtol=1e-12)


def test_boundary_band_of_a_square_by_hand():
  # 50x50: diagonal 70.7, d = round(1.41) = 1. A 20x20 square of class 1 on class 0.
  labels = np.zeros((1, 50, 50), np.int32)
  labels[0, 15:35, 15:35] = 1
  assert metrics.boundary_dilation(50, 50) == 1
  inter, union = metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(labels), 2)
  # Class 1: the square minus its 18x18 inside. Class 0: the image's outer ring (50*4 - 4)
  # and the ring around the square (22*22 - 20*20).
  assert inter.tolist() == union.tolist() == [196 + 84, 400 - 324]
  # The prediction shifted right by one pixel: the bands share 19 pixels of the top row and
  # 19 of the bottom one; the union is 76 + 76 - 38.
  preds = np.roll(labels, 1, axis=2)
  inter, union = metrics.boundary_counts(jnp.asarray(preds), jnp.asarray(labels), 2)
  assert (int(inter[1]), int(union[1])) == (38, 114)
  # A band 3 pixels wide (the override for padded images): 400 - 14 * 14.
  inter, union = metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(labels), 2,
                                         dilation=3)
  assert int(inter[1]) == int(union[1]) == 204
  # Ground truth ignores the square's left half, the prediction keeps the whole square. The
  # ground-truth band of class 1 is the ring of the remaining 20x10 half (200 - 18 * 8),
  # its column along the ignore region included (the reference's band of the class mask);
  # the predicted band keeps only its non-ignored pixels: the right column and the right
  # halves of the top and bottom rows (18 + 10 + 10), all inside the ground-truth band.
  ignored = labels.copy()
  ignored[0, 15:35, 15:25] = 255
  inter, union = metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(ignored), 2)
  assert (int(inter[1]), int(union[1])) == (38, 56)


def test_format_table():
  names = ["road", "sky", "train"]
  cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]], np.int64)
  out = metrics.summarize(cm, names, boundary=(np.array([3, 4, 0]), np.array([6, 5, 0])))
  table = metrics.format_table(out, names)
  lines = table.splitlines()
  assert [c.strip() for c in lines[1].split("|")[1:-1]] == ["Class", *PER_CLASS, "BIoU"]
  road = next(line for line in lines if line.startswith("| road"))
  cells = [c.strip() for c in road.split("|")[1:-1]]
  assert cells == ["road", "72.73", "80.00", "84.21", "84.21", "88.89", "80.00", "50.00"]
  train = next(line for line in lines if line.startswith("| train"))
  assert [c.strip() for c in train.split("|")[2:-1]] == ["nan"] * 7
  assert lines[-1].startswith("aAcc 85.00  mIoU ") and "mBIoU 65.00" in lines[-1]
  assert "BIoU" not in metrics.format_table(metrics.summarize(cm, names), names)
