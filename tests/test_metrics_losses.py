"""Metrics against an independent numpy implementation; the loss against a direct formula."""
import jax.numpy as jnp
import numpy as np

from segjax import losses, metrics


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


def test_cross_entropy_ignores_255_and_resizes():
  rng = np.random.RandomState(1)
  logits = rng.randn(2, 8, 8, 4).astype(np.float32)
  labels = rng.randint(0, 4, (2, 8, 8))
  labels[:, :3] = 255
  got = float(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  ref = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  # Logits at 1/4 resolution are upsampled to the labels.
  small = jnp.asarray(logits[:, ::4, ::4])
  assert np.isfinite(float(losses.cross_entropy(small, jnp.asarray(labels))))
  # All-ignored labels give zero, not NaN.
  assert float(losses.cross_entropy(jnp.asarray(logits), jnp.full((2, 8, 8), 255))) == 0.0
