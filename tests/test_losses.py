"""Each loss of segjax.losses against the mmseg 1.2.2 class it equals (values, and gradients
against torch autograd), the per-head `loss` config, and the training loss built from it.

Tiny random batches (B=2, C=5, 11x13) with ignored pixels; mmseg is imported once per session
(tests/mmseg_reference.py stubs the compiled ops mmcv-lite lacks).
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses, models
from segjax.errors import ConfigError
from tests.mmseg_reference import import_mmseg

B, H, W, C = 2, 11, 13, 5
RTOL = 1e-5


@pytest.fixture(scope="module")
def mm():
  """mmseg's registries; mmseg.models.losses may be imported once this ran."""
  return import_mmseg()


def batch(seed=0, ignore=True, num_classes=C, scale=2.0):
  """Random logits (B, H, W, C) and labels with a block and scattered pixels ignored."""
  rng = np.random.RandomState(seed)
  logits = (scale * rng.randn(B, H, W, num_classes)).astype(np.float32)
  labels = rng.randint(0, num_classes, (B, H, W))
  if ignore:
    labels[0, :3] = 255
    labels[rng.rand(B, H, W) < 0.1] = 255
  return logits, labels


def torch_pair(logits, labels, grad=False):
  import torch
  x = torch.from_numpy(np.ascontiguousarray(logits.transpose(0, 3, 1, 2)))
  return x.requires_grad_(grad), torch.from_numpy(labels).long()


def ours(name, logits, labels, **options):
  """The registered loss, jitted (so every comparison also checks that it jits)."""
  fn = jax.jit(lambda x, y: losses.LOSSES.get(name)(x, y, **options))
  return float(fn(jnp.asarray(logits), jnp.asarray(labels)))


def ours_grad(name, logits, labels, **options):
  fn = jax.jit(jax.grad(lambda x, y: losses.LOSSES.get(name)(x, y, **options)))
  return np.asarray(fn(jnp.asarray(logits), jnp.asarray(labels)))


def torch_grad_nhwc(x):
  return x.grad.numpy().transpose(0, 2, 3, 1)


CITY5 = losses.CITYSCAPES_CLASS_WEIGHT[:C]  # class weights for the C test classes


# ------------------------------------------------------------------------------------------
# cross_entropy
# ------------------------------------------------------------------------------------------

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


def test_default_options_are_the_previous_cross_entropy_bit_for_bit():
  """Existing runs trained with this formula; the defaults must not change a bit of it."""
  import optax
  from segjax.models.layers import resize_bilinear
  logits, labels = batch(3)

  def previous(logits, labels):
    logits = resize_bilinear(logits, labels.shape[1:3]).astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    valid = labels != 255
    safe = jnp.where(valid, labels, 0)
    pixel = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    return jnp.sum(pixel * valid) / jnp.maximum(jnp.sum(valid), 1)

  for x in (logits, logits[:, ::2, ::2]):
    x, y = jnp.asarray(x), jnp.asarray(labels)
    assert float(jax.jit(losses.cross_entropy)(x, y)) == float(jax.jit(previous)(x, y))
    total, parts = jax.jit(lambda a, b: losses.segmentation_loss(a, (a,), b, (0.4,)))(x, y)
    old = previous(x, y)
    assert float(total) == float(old + 0.4 * old)
    assert set(parts) == {"loss_main", "loss_aux0"}


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_cross_entropy_equals_mmseg(mm, avg_non_ignore):
  import torch.nn.functional as F
  from mmseg.models.losses import CrossEntropyLoss
  logits, labels = batch(0)
  small = logits[:, ::2, ::2]  # resized to the labels on both sides
  x, y = torch_pair(small, labels)
  x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
  theirs = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(x, y, ignore_index=255)
  got = ours("cross_entropy", small, labels, avg_non_ignore=avg_non_ignore)
  np.testing.assert_allclose(got, float(theirs), rtol=RTOL)


def test_class_weighted_cross_entropy_equals_mmseg_and_torch_gradients(mm):
  """mmseg's avg_factor with class weights is Σ w[label] (not the pixel count). mmseg 1.2.2
  indexes the weights with 255 and raises on ignored pixels (#3734), so it is compared on a
  batch without; with ignored pixels the reference is torch's weighted mean, which is what
  mmseg's formula gives once ignored pixels weigh 0."""
  import torch.nn.functional as F
  from mmseg.models.losses import CrossEntropyLoss
  weight = (0.5, 1.0, 2.0, 0.25, 3.0)
  logits, labels = batch(1, ignore=False)
  for avg_non_ignore in (False, True):
    x, y = torch_pair(logits, labels)
    theirs = CrossEntropyLoss(class_weight=list(weight), avg_non_ignore=avg_non_ignore)(
        x, y, ignore_index=255)
    got = ours("cross_entropy", logits, labels, class_weight=weight,
               avg_non_ignore=avg_non_ignore)
    np.testing.assert_allclose(got, float(theirs), rtol=RTOL)
    unweighted = ours("cross_entropy", logits, labels, avg_non_ignore=avg_non_ignore)
    assert abs(got - unweighted) > 1e-3  # the weights matter

  import torch
  logits, labels = batch(2)
  x, y = torch_pair(logits, labels, grad=True)
  theirs = F.cross_entropy(x, y, weight=torch.tensor(weight), ignore_index=255)
  theirs.backward()
  for avg_non_ignore in (False, True):
    got = ours("cross_entropy", logits, labels, class_weight=weight,
               avg_non_ignore=avg_non_ignore)
    np.testing.assert_allclose(got, float(theirs), rtol=RTOL)
  grad = ours_grad("cross_entropy", logits, labels, class_weight=weight)
  np.testing.assert_allclose(grad, torch_grad_nhwc(x), rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_binary_cross_entropy_equals_mmseg_sigmoid_loss(mm, avg_non_ignore):
  """CrossEntropyLoss(use_sigmoid=True) (Fast-SCNN's), values and gradients, logits resized
  to the labels on both sides."""
  import torch.nn.functional as F
  from mmseg.models.losses import CrossEntropyLoss
  logits, labels = batch(4)
  small = logits[:, ::2, ::2]
  x, y = torch_pair(small, labels, grad=True)
  theirs = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=avg_non_ignore)(
      F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False), y, ignore_index=255)
  theirs.backward()
  got = ours("binary_cross_entropy", small, labels, avg_non_ignore=avg_non_ignore)
  np.testing.assert_allclose(got, float(theirs), rtol=RTOL)
  np.testing.assert_allclose(ours_grad("binary_cross_entropy", small, labels,
                                       avg_non_ignore=avg_non_ignore),
                             torch_grad_nhwc(x), rtol=1e-4, atol=1e-8)


def test_cityscapes_class_weight_is_mmsegs(mm):
  import os
  cfg = mm.Config.fromfile(os.path.join(
      mm.configs, "pidnet", "pidnet-s_2xb6-120k_1024x1024-cityscapes.py"))
  assert tuple(cfg.class_weight) == losses.CITYSCAPES_CLASS_WEIGHT
  logits, labels = batch(4, num_classes=19)
  np.testing.assert_allclose(
      ours("cross_entropy", logits, labels, class_weight="cityscapes"),
      ours("cross_entropy", logits, labels, class_weight=losses.CITYSCAPES_CLASS_WEIGHT),
      rtol=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_label_smoothing_equals_torch(mm, weighted):
  import torch
  import torch.nn.functional as F
  weight = (0.5, 1.0, 2.0, 0.25, 3.0) if weighted else None
  logits, labels = batch(5)
  x, y = torch_pair(logits, labels, grad=True)
  theirs = F.cross_entropy(x, y, weight=None if weight is None else torch.tensor(weight),
                           ignore_index=255, label_smoothing=0.1)
  theirs.backward()
  got = ours("cross_entropy", logits, labels, class_weight=weight, label_smoothing=0.1)
  np.testing.assert_allclose(got, float(theirs), rtol=RTOL)
  grad = ours_grad("cross_entropy", logits, labels, class_weight=weight, label_smoothing=0.1)
  np.testing.assert_allclose(grad, torch_grad_nhwc(x), rtol=RTOL, atol=1e-7)


# ------------------------------------------------------------------------------------------
# ohem_cross_entropy
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("thresh,min_kept,avg_non_ignore", [
    (0.7, 100000, True),   # mmseg's config values: more than the batch, so prob < max(...)
    (0.7, 30, False),      # many pixels below 0.7: the threshold decides
    (0.05, 40, True),      # few below 0.05: the 80th-smallest probability decides
    (None, 25, True),      # no threshold: the 50 largest losses
])
def test_ohem_equals_mmseg_sampler_and_cross_entropy(mm, thresh, min_kept, avg_non_ignore):
  from mmseg.models.losses import CrossEntropyLoss
  from mmseg.structures.sampler import OHEMPixelSampler
  logits, labels = batch(6)
  x, y = torch_pair(logits, labels, grad=True)
  ce = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)
  context = types.SimpleNamespace(ignore_index=255, loss_decode=ce)
  seg_weight = OHEMPixelSampler(context, thresh=thresh, min_kept=min_kept).sample(
      x, y[:, None])
  kept = int(seg_weight.sum())
  assert 0 < kept < int((labels != 255).sum())  # the sampler really selects
  theirs = ce(x, y, weight=seg_weight, ignore_index=255)
  theirs.backward()
  options = dict(thresh=thresh, min_kept=min_kept, avg_non_ignore=avg_non_ignore)
  np.testing.assert_allclose(ours("ohem_cross_entropy", logits, labels, **options),
                             float(theirs), rtol=RTOL)
  # The selection gets no gradient: torch's sampler runs under no_grad.
  np.testing.assert_allclose(ours_grad("ohem_cross_entropy", logits, labels, **options),
                             torch_grad_nhwc(x), rtol=RTOL, atol=1e-7)


# ------------------------------------------------------------------------------------------
# ohem_mean_cross_entropy, boundary_ohem_cross_entropy (DDRNet's and PIDNet's)
# ------------------------------------------------------------------------------------------

OHEM_MEAN_CASES = [
    (0.7, 100000, None),  # the configs' min_kept is more than the batch: max(largest, 0.7)
    (0.7, 30, CITY5),     # many pixels below 0.7: the threshold decides
    (0.05, 40, None),     # few below 0.05: the 40th-smallest probability (0-based) decides
    (0.9, 1, CITY5),      # min_kept 1: the second-smallest probability, then 0.9
]


@pytest.mark.parametrize("thresh,min_kept,class_weight", OHEM_MEAN_CASES)
def test_ohem_mean_equals_mmseg_ohem_cross_entropy(mm, thresh, min_kept, class_weight):
  """mmseg's OhemCrossEntropy class (DDRNet's and PIDNet's configs): values and gradients,
  class weights scaling each pixel without entering the mean."""
  from mmseg.models.losses import OhemCrossEntropy
  logits, labels = batch(21)
  x, y = torch_pair(logits, labels, grad=True)
  theirs = OhemCrossEntropy(thres=thresh, min_kept=min_kept,
                            class_weight=None if class_weight is None else list(class_weight))
  value = theirs(x, y)
  value.backward()
  kept = int(np.sum(np.asarray(torch_grad_nhwc(x)).any(-1)))
  assert 0 < kept < int((labels != 255).sum())  # the selection really selects
  options = dict(thresh=thresh, min_kept=min_kept, class_weight=class_weight)
  np.testing.assert_allclose(ours("ohem_mean_cross_entropy", logits, labels, **options),
                             float(value), rtol=RTOL)
  np.testing.assert_allclose(ours_grad("ohem_mean_cross_entropy", logits, labels, **options),
                             torch_grad_nhwc(x), rtol=RTOL, atol=1e-8)


@pytest.mark.parametrize("min_kept,class_weight", [(100000, CITY5), (20, None)])
def test_boundary_ohem_equals_mmseg_pid_head_term(mm, min_kept, class_weight):
  """PIDHead's loss_sem_bd: OhemCrossEntropy on the labels kept where sigmoid(boundary logit)
  > 0.8 (255 elsewhere), here from the class logits with the boundary logit appended; the
  boundary logit gets no gradient."""
  import torch
  from mmseg.models.losses import OhemCrossEntropy
  logits, _ = batch(22, num_classes=C + 1)
  _, labels = batch(22)
  logits[..., -1] *= 1.5  # about a third of the pixels above 0.8
  x, y = torch_pair(logits, labels, grad=True)
  edge = torch.sigmoid(x[:, -1]) > 0.8
  assert 0.1 < float(edge.float().mean()) < 0.6
  theirs = OhemCrossEntropy(thres=0.9, min_kept=min_kept,
                            class_weight=None if class_weight is None else list(class_weight))
  value = theirs(x[:, :-1], torch.where(edge, y, torch.full_like(y, 255)))
  value.backward()
  options = dict(thresh=0.9, min_kept=min_kept, class_weight=class_weight)
  np.testing.assert_allclose(ours("boundary_ohem_cross_entropy", logits, labels, **options),
                             float(value), rtol=RTOL)
  grad = ours_grad("boundary_ohem_cross_entropy", logits, labels, **options)
  assert not grad[..., -1].any()
  np.testing.assert_allclose(grad, torch_grad_nhwc(x), rtol=RTOL, atol=1e-8)


def test_ohem_means_are_zero_where_nothing_is_kept():
  """mmseg: 0 without labelled pixels, NaN (a mean of nothing) when every labelled pixel is at
  or above the threshold; segjax: 0 in both cases."""
  logits = np.zeros((1, 4, 4, 3), np.float32)
  logits[..., 0] = 30.0  # probability 1 for class 0 everywhere
  labels = np.zeros((1, 4, 4), np.int64)
  assert ours("ohem_mean_cross_entropy", logits, labels, thresh=0.5, min_kept=2) == 0.0
  assert ours("ohem_mean_cross_entropy", logits, np.full_like(labels, 255)) == 0.0
  with_edge = np.concatenate([logits, np.full((1, 4, 4, 1), -5.0, np.float32)], -1)
  assert ours("boundary_ohem_cross_entropy", with_edge, labels) == 0.0  # no edge pixel


# ------------------------------------------------------------------------------------------
# focal, dice, tversky
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha,class_weight", [(0.5, None), (0.25, (1.0, 2.0, 0.5, 1.0, 3.0)),
                                                ((0.1, 0.2, 0.3, 0.4, 0.5), None)])
def test_focal_equals_mmseg(mm, alpha, class_weight):
  """FocalLoss.forward on CPU fails for class-id labels in mmseg 1.2.2 (#3249: one_hot[:, C]
  for [:, :C]); this is its py_sigmoid_focal_loss on the one-hot target the forward builds
  after that fix, which is what the CUDA kernel path computes."""
  import torch
  import torch.nn.functional as F
  from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss
  logits, labels = batch(7)
  x, y = torch_pair(logits, labels, grad=True)
  pred = x.permute(0, 2, 3, 1).reshape(-1, C)
  target = y.reshape(-1)
  valid_mask = (target != 255).view(-1, 1)
  target = torch.where(target == 255, 0, target)
  one_hot = F.one_hot(target, num_classes=C + 1)[:, :C]
  theirs = py_sigmoid_focal_loss(
      pred, one_hot, gamma=2.0, alpha=list(alpha) if isinstance(alpha, tuple) else alpha,
      class_weight=None if class_weight is None else list(class_weight),
      valid_mask=valid_mask, reduction="mean")
  theirs.backward()
  got = ours("focal", logits, labels, alpha=alpha, class_weight=class_weight)
  np.testing.assert_allclose(got, float(theirs), rtol=RTOL)
  np.testing.assert_allclose(ours_grad("focal", logits, labels, alpha=alpha,
                                       class_weight=class_weight),
                             torch_grad_nhwc(x), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("options", [{}, {"use_sigmoid": False}, {"naive_dice": True},
                                     {"use_sigmoid": False, "naive_dice": True, "eps": 1.0},
                                     {"activate": False}])
def test_dice_equals_mmseg(mm, options):
  from mmseg.models.losses import DiceLoss
  logits, labels = batch(8)
  x, y = torch_pair(logits, labels)
  theirs = DiceLoss(**options)(x, y, ignore_index=255)
  np.testing.assert_allclose(ours("dice", logits, labels, **options), float(theirs), rtol=RTOL)


@pytest.mark.parametrize("options", [{}, {"alpha": 0.6, "beta": 0.4, "smooth": 0.5,
                                          "class_weight": (1.0, 2.0, 0.5, 1.0, 3.0)}])
def test_tversky_equals_mmseg(mm, options):
  from mmseg.models.losses import TverskyLoss
  logits, labels = batch(9)
  x, y = torch_pair(logits, labels)
  mm_options = dict(options)
  if "class_weight" in mm_options:
    mm_options["class_weight"] = list(mm_options["class_weight"])
  theirs = TverskyLoss(**mm_options)(x, y)
  np.testing.assert_allclose(ours("tversky", logits, labels, **options), float(theirs),
                             rtol=RTOL)


# ------------------------------------------------------------------------------------------
# lovasz
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes,class_weight", [("present", None), ("all", None),
                                                  ((0, 2, 4), (1.0, 2.0, 0.5, 1.0, 3.0))])
def test_lovasz_equals_mmseg_with_gradients(mm, per_image, classes, class_weight):
  from mmseg.models.losses import LovaszLoss
  logits, labels = batch(10)
  labels[0][labels[0] == 3] = 1  # class 3 absent from image 0: "present" differs from "all"
  x, y = torch_pair(logits, labels, grad=True)
  theirs = LovaszLoss(
      classes=list(classes) if isinstance(classes, tuple) else classes, per_image=per_image,
      reduction="mean" if per_image else "none",
      class_weight=None if class_weight is None else list(class_weight))(x, y, ignore_index=255)
  theirs.backward()
  options = dict(classes=classes, per_image=per_image, class_weight=class_weight)
  np.testing.assert_allclose(ours("lovasz", logits, labels, **options), float(theirs),
                             rtol=RTOL)
  np.testing.assert_allclose(ours_grad("lovasz", logits, labels, **options),
                             torch_grad_nhwc(x), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------
# boundary
# ------------------------------------------------------------------------------------------

def blob_labels(seed):
  """Piecewise-constant labels (real boundaries), some pixels ignored."""
  rng = np.random.RandomState(seed)
  cells = rng.randint(0, C, (B, 4, 4))
  labels = np.kron(cells, np.ones((1, 4, 4), int))[:, :H, :W].copy()
  labels[:, 5:7, 3:9] = 255
  return labels


@pytest.mark.parametrize("edge_width", [3, 4])
def test_boundary_target_and_loss_equal_mmseg(mm, edge_width):
  import torch
  from mmseg.datasets.transforms import GenerateEdge
  from mmseg.models.losses import BoundaryLoss
  labels = blob_labels(11)
  edges = np.stack([
      GenerateEdge(edge_width=edge_width).transform(
          {"img_shape": (H, W), "gt_seg_map": label.astype(np.uint8)})["gt_edge_map"]
      for label in labels])
  assert 0 < edges.mean() < 1
  np.testing.assert_array_equal(
      np.asarray(losses.boundary_target(jnp.asarray(labels), edge_width)), edges)

  logits = np.random.RandomState(12).randn(B, H, W, 1).astype(np.float32)
  x = torch.from_numpy(logits.transpose(0, 3, 1, 2)).requires_grad_()
  theirs = BoundaryLoss()(x, torch.from_numpy(edges))
  theirs.backward()
  np.testing.assert_allclose(ours("boundary", logits, labels, edge_width=edge_width),
                             float(theirs), rtol=RTOL)
  np.testing.assert_allclose(ours_grad("boundary", logits, labels, edge_width=edge_width),
                             torch_grad_nhwc(x), rtol=RTOL, atol=1e-9)


def test_boundary_needs_one_channel():
  logits, labels = batch(0)
  with pytest.raises(ValueError, match="1-channel"):
    losses.boundary(jnp.asarray(logits), jnp.asarray(labels))


# ------------------------------------------------------------------------------------------
# detail (STDC)
# ------------------------------------------------------------------------------------------

def test_detail_target_and_losses_equal_mmseg_stdc_head(mm):
  """STDC's detail head loss through segmentation_loss (its two losses, the logits upsampled
  with corners aligned) against mmseg's STDCHead.loss_by_feat: the derived detail ground
  truth, loss_ce (sigmoid BCE) and loss_dice, and the gradient of their sum. Odd sizes, so
  the stride-2 and stride-4 edge maps are upsampled by non-integer factors; labels with
  blobs, a large id (the ignore id 255) and a border."""
  from unittest import mock

  import torch
  from mmengine.structures import PixelData
  from mmseg.models.decode_heads.decode_head import BaseDecodeHead
  from mmseg.models.decode_heads.stdc_head import STDCHead
  from mmseg.structures import SegDataSample
  h, w = 23, 29
  rng = np.random.RandomState(21)
  labels = np.kron(rng.randint(0, 19, (2, 5, 6)), np.ones((1, 5, 5), int))[:, :h, :w].copy()
  labels[0, 9:14, 4:17] = 255
  labels[1, :, :3] = 0
  logits = rng.randn(2, 6, 8, 2).astype(np.float32)  # the head's 1/4-ish map

  head = STDCHead(in_channels=4, channels=4, num_convs=1, num_classes=2,
                  boundary_threshold=0.1, in_index=0, concat_input=False, align_corners=True,
                  loss_decode=[dict(type="CrossEntropyLoss", loss_name="loss_ce",
                                    use_sigmoid=True, loss_weight=1.0),
                               dict(type="DiceLoss", loss_name="loss_dice", loss_weight=1.0)])
  samples = []
  for label in labels:
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None]).long())
    samples.append(sample)
  captured = {}
  real = BaseDecodeHead.loss_by_feat

  def spy(self, seg_logits, data_samples):  # sees the detail ground truth STDCHead derived
    captured["target"] = np.stack([s.gt_sem_seg.data.numpy()[0] for s in data_samples])
    return real(self, seg_logits, data_samples)

  x = torch.from_numpy(logits.transpose(0, 3, 1, 2).copy()).requires_grad_()
  with mock.patch.object(BaseDecodeHead, "loss_by_feat", spy):
    theirs = head.loss_by_feat(x, samples)
  (theirs["loss_ce"] + theirs["loss_dice"]).backward()
  target = captured["target"]
  assert 0.05 < target.mean() < 0.9  # edges and plain regions both
  np.testing.assert_array_equal(np.asarray(losses.detail_target(jnp.asarray(labels))), target)

  specs = ((("detail_bce", 1.0, (("boundary_threshold", 0.1),)), ("detail_dice", 1.0, ())),)

  def loss(x):
    return losses.segmentation_loss(x, (), jnp.asarray(labels), (), specs, (True,))

  (total, parts), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(logits))
  np.testing.assert_allclose(float(parts["loss_main_detail_bce"]), theirs["loss_ce"].item(),
                             rtol=RTOL)
  np.testing.assert_allclose(float(parts["loss_main_detail_dice"]),
                             theirs["loss_dice"].item(), rtol=RTOL)
  np.testing.assert_allclose(np.asarray(grad), torch_grad_nhwc(x), rtol=1e-4, atol=1e-8)


# ------------------------------------------------------------------------------------------
# every loss: jittable, differentiable, finite on an all-ignored batch
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", losses.LOSSES.names())
def test_every_loss_is_finite_on_small_logits_and_all_ignored_labels(name):
  logits, labels = batch(13, num_classes=1 if name == "boundary" else C)  # boundary_ohem: 4 + 1
  small = jnp.asarray(logits[:, ::4, ::4])  # 1/4 resolution
  fn = jax.jit(jax.value_and_grad(losses.LOSSES.get(name)))
  for y in (jnp.asarray(labels), jnp.full(labels.shape, 255)):
    value, grad = fn(small, y)
    assert value.dtype == jnp.float32 and value.shape == ()
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()


# ------------------------------------------------------------------------------------------
# per-head `loss` configs and the training loss
# ------------------------------------------------------------------------------------------

def test_head_loss_config_builds_and_sums(test_config):
  test_config.model.decode_head.loss = ({"name": "cross_entropy", "weight": 1.0},
                                        {"name": "dice", "weight": 3.0})
  test_config.model.auxiliary_head = ({"name": "fcn_head", "in_index": 2, "channels": 8,
                                       "loss_weight": 0.4,
                                       "loss": [{"name": "lovasz", "per_image": True}]},)
  model = models.build_model(test_config)
  assert model.output_losses == (
      (("cross_entropy", 1.0, ()), ("dice", 3.0, ())),
      (("lovasz", 1.0, (("per_image", True),)),))
  # Random outputs of the model's shapes (running the model would only cost time here).
  x = jnp.zeros((2, 32, 32, 3))
  shapes = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x))
  rng = np.random.RandomState(0)
  logits, aux = jax.tree.map(lambda s: jnp.asarray(rng.randn(*s.shape), jnp.float32), shapes)
  assert logits.shape == (2, 8, 8, C) and aux[0].shape == (2, 2, 2, C)
  _, labels = batch(14)
  labels = jnp.asarray(np.pad(labels, ((0, 0), (0, 32 - H), (0, 32 - W)), constant_values=255))
  total, parts = jax.jit(lambda *a: losses.segmentation_loss(
      *a, model.aux_loss_weights, model.output_losses))(logits, aux, labels)
  ce = losses.cross_entropy(logits, labels)
  dice = losses.dice(logits, labels)
  lovasz = losses.lovasz(aux[0], labels, per_image=True)
  np.testing.assert_allclose(float(total), float(ce + 3.0 * dice + 0.4 * lovasz), rtol=1e-6)
  np.testing.assert_allclose(float(parts["loss_main_dice"]), float(3.0 * dice), rtol=1e-6)
  np.testing.assert_allclose(float(parts["loss_main"]), float(ce + 3.0 * dice), rtol=1e-6)
  np.testing.assert_allclose(float(parts["loss_aux0"]), float(lovasz), rtol=1e-6)
  assert set(parts) == {"loss_main", "loss_main_cross_entropy", "loss_main_dice", "loss_aux0"}


def test_cascade_and_extra_outputs_get_their_heads_losses(test_config):
  """A cascade's stages each their own list; DANet's pam/cam outputs their head's list."""
  from configs import common
  from tests.conftest import load_config
  dice, ce = {"name": "dice", "weight": 2.0}, {"name": "cross_entropy", "weight": 1.0}
  test_config.model = common.encoder_decoder(
      backbone=test_config.model.backbone.to_dict(),
      decode_head=({"name": "fcn_head", "in_index": 0, "channels": 8, "loss_weight": 0.4,
                    "loss": (dice,)},
                   {"name": "ocr_head", "in_index": 0, "channels": 8, "ocr_channels": 8}))
  model = models.build_model(test_config)
  assert model.output_losses == (losses.DEFAULT_LOSSES, (("dice", 2.0, ()),))

  config = load_config("danet_r50_d8_city")
  config.model.decode_head.loss = (dice, ce)
  model = models.build_model(config)
  head = (("dice", 2.0, ()), ("cross_entropy", 1.0, ()))
  assert model.aux_loss_weights == (1.0, 1.0, 0.4)
  assert model.output_losses == (head, head, head, losses.DEFAULT_LOSSES)


def test_extra_outputs_get_their_own_loss_lists():
  """PIDHead's extra outputs (P logits, a boundary logit, logits ++ boundary logit) each train
  with their own list from the config's `extra_losses`, validated for that output's channels;
  a head whose extra outputs are not class logits must be given them."""
  import copy
  from tests.conftest import load_config
  config = load_config("pidnet_s_city")
  model = models.build_model(config)
  assert [tuple(spec[0] for spec in specs) for specs in model.output_losses] == [
      ("ohem_mean_cross_entropy",), ("cross_entropy",), ("boundary",),
      ("boundary_ohem_cross_entropy",)]
  assert model.aux_loss_weights == (0.4, 20.0, 1.0)
  head = config.model.decode_head.to_dict()
  boundary = head["extra_losses"][1]
  for extra, match in (
      (None, r"model.decode_head.extra_losses is missing: pid_head's extra outputs have "
             r"\(19, 1, 20\) channels"),
      (head["extra_losses"][:2], r"model.decode_head.extra_losses must hold one loss list per "
                                 r"extra output of pid_head \(3\)"),
      ((boundary,) * 3, r"model.decode_head.extra_losses\[0\]\[0\]: boundary: .*1-channel"),
      ((head["extra_losses"][0],) * 2 + (head["extra_losses"][2],),
       r"model.decode_head.extra_losses\[1\]\[0\]: cross_entropy: class_weight has 19 entries "
       r"for 1 classes")):
    bad = copy.deepcopy(head)
    bad.pop("extra_losses")
    if extra is not None:
      bad["extra_losses"] = extra
    config.model = {**config.model.to_dict(), "decode_head": bad}
    with pytest.raises(ConfigError, match=match):
      models.build_model(config)


def test_models_without_output_losses_train_on_cross_entropy():
  logits, labels = batch(15)
  x, y = jnp.asarray(logits), jnp.asarray(labels)
  total, _ = losses.segmentation_loss(x, (x[:, ::2, ::2],), y, (0.4,))
  expected = losses.cross_entropy(x, y) + 0.4 * losses.cross_entropy(x[:, ::2, ::2], y)
  assert float(total) == float(expected)


@pytest.mark.parametrize("where,entry,match", [
    ("auxiliary_head", {"name": "dise"},
     r"model.auxiliary_head\[0\].loss\[1\].name: unknown loss 'dise'"),
    ("decode_head", {"name": "dice", "smooth": 1.0},
     r"model.decode_head.loss\[1\]: .*'smooth'"),
    ("decode_head", {"name": "tversky", "alpha": 0.5},
     r"model.decode_head.loss\[1\]: tversky: alpha \+ beta must be 1"),
    ("decode_head", {"name": "cross_entropy", "class_weight": (1.0, 2.0)},
     r"model.decode_head.loss\[1\]: cross_entropy: class_weight has 2 entries for 5 classes"),
    ("decode_head", {"name": "boundary"}, r"model.decode_head.loss\[1\]: boundary: .*1-channel"),
    ("decode_head", {"weight": 1.0}, r"model.decode_head.loss\[1\].name is missing"),
])
def test_bad_loss_configs_name_the_key(test_config, where, entry, match):
  test_config.model.auxiliary_head = ({"name": "fcn_head", "in_index": 2, "channels": 8,
                                       "loss_weight": 0.4},)
  head = (test_config.model.auxiliary_head[0] if where == "auxiliary_head"
          else test_config.model.decode_head)
  head["loss"] = ({"name": "cross_entropy"}, entry)
  with pytest.raises(ConfigError, match=match):
    models.build_model(test_config)


def test_enet_class_weights_are_one_over_log_of_c_plus_the_share():
  weights = losses.enet_class_weights((0.4055, 0.0, 1.0))
  np.testing.assert_allclose(weights, (1 / np.log(1.4255), 1 / np.log(1.02), 1 / np.log(2.02)),
                             atol=1e-4)
  assert weights[1] == pytest.approx(50.4983, abs=1e-4)  # the bound, for a class never seen
