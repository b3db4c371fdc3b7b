"""mmseg's per-image test protocol: shape buckets, slide windows, TTA, and that evaluate,
predict and Segmenter are one prediction, checked by values."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from segjax import data as data_lib
from segjax import evaluate, metrics, models, parallel
from segjax.data import pipeline, transforms
from segjax.inference import Segmenter
from tests.mmseg_reference import import_mmseg

# (h, w) of the fixture's images: two share a size, one is smaller than the slide window.
SIZES = [(48, 48), (30, 45), (48, 48), (50, 30), (20, 26), (30, 45), (41, 37)]
NAMES = ("background", "disc", "square", "triangle", "ring")


def write_folder(root, sizes=SIZES, seed=0):
  """A folder dataset (images/val, masks/val) of blobby random images of the given sizes."""
  rng = np.random.RandomState(seed)
  for split in ("train", "val"):
    os.makedirs(root / "images" / split, exist_ok=True)
    os.makedirs(root / "masks" / split, exist_ok=True)
  for i, (h, w) in enumerate(sizes):
    image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
    mask = (np.arange(h)[:, None] * 5 // h + np.arange(w)[None] * 3 // w) % 5
    mask = mask.astype(np.uint8)
    mask[rng.rand(h, w) < 0.05] = 255
    for split in ("train", "val"):
      Image.fromarray(image).save(root / "images" / split / f"im{i}.png")
      Image.fromarray(mask).save(root / "masks" / split / f"im{i}.png")


@pytest.fixture
def folder_setup(test_config, tmp_path):
  write_folder(tmp_path / "data")
  config = test_config
  config.data.name = "folder"
  config.data.root = str(tmp_path / "data")
  config.data.class_names = NAMES
  config.eval.scale = (40, 40)  # some images are resized down, some up, some not at all
  model = models.build_model(config)
  variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                         train=False))()
  return config, model, variables


def test_plan_counts_every_image_once_in_size_groups(folder_setup):
  config, _, _ = folder_setup
  source = data_lib.build_source(config.data, "val")
  for batch, hosts in ((4, 1), (8, 2), (3, 3)):
    plan = pipeline.plan_eval(source, (40, 40), batch)
    seen, steps = [], set()
    for h in range(hosts):
      batches = list(pipeline.eval_batches(source, plan, process_index=h, process_count=hosts))
      steps.add(len(batches))
      for b, planned in zip(batches, plan):
        assert b["image"].shape[1:3] == planned.input_size
        assert b["label"].shape[1:3] == planned.label_size
        assert (b["label"][~b["valid"]] == 255).all()
        seen += b["index"][b["valid"]].tolist()
    assert steps == {len(plan)}  # every host runs the same programs in the same order
    assert sorted(seen) == list(range(len(SIZES)))
  groups = {(b.input_size, b.label_size) for b in plan}
  assert len(groups) == len(set(SIZES))
  assert ((27, 40), (30, 45)) in groups and ((40, 24), (50, 30)) in groups  # keep-ratio fits


def test_keep_ratio_size_is_mmcvs_rescale():
  # mmcv.rescale_size(w, h) with scale (2048, 1024): Cityscapes unchanged, ADE-like fitted.
  assert transforms.keep_ratio_size((1024, 2048), (1024, 2048)) == (1024, 2048)
  assert transforms.keep_ratio_size((512, 683), (512, 2048)) == (512, 683)
  assert transforms.keep_ratio_size((375, 500), (512, 2048)) == (512, 683)
  assert transforms.keep_ratio_size((563, 1000), (512, 1024)) == (512, 909)
  assert transforms.keep_ratio_size((7, 9), ()) == (7, 9)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_bucketed_multi_device_evaluation_equals_a_per_image_loop(folder_setup, mode):
  """8 devices, batches of 8 from 5 size groups (mostly padding examples) give exactly the
  confusion matrix (and Boundary IoU counts) of predicting each image alone at batch 1 on
  one device with Segmenter. In slide mode the model compiles once per window size."""
  config, model, variables = folder_setup
  config.eval.mode, config.eval.crop_size, config.eval.stride = mode, (24, 24), (16, 16)
  source = data_lib.build_source(config.data, "val")
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  evaluator = evaluate.Evaluator(model, config, mesh, source)
  results, _ = evaluator(jax.device_put(variables, parallel.replicated(mesh)))
  compiled = evaluator.predictor.compilations
  test_sizes = {transforms.keep_ratio_size(s, (40, 40)) for s in SIZES}
  if mode == "whole":  # one model program per test size
    assert sum(c.startswith("model") for c in compiled) == len(test_sizes)
  else:  # one per window size: 24x24, and the images narrower than the window
    windows = {(min(24, h), min(24, w)) for h, w in test_sizes}
    assert sorted(c for c in compiled if c.startswith("model")) == sorted(
        f"model {h}x{w}" for h, w in windows) and len(windows) < len(test_sizes)
  assert sum(c.startswith("score") for c in compiled) == len(set(SIZES))

  seg = Segmenter(config, variables)
  expected = np.zeros((5, 5), np.int64)
  inter, union = np.zeros(5, np.int64), np.zeros(5, np.int64)
  for i in range(len(source)):
    image, label = source.load(i)
    pred = seg.predict(image[None])[0]
    assert pred.shape == label.shape
    keep = label != 255
    np.add.at(expected, (label[keep], pred[keep]), 1)
    i_, u_ = metrics.boundary_counts(jnp.asarray(pred[None]), jnp.asarray(label[None]), 5)
    inter += np.asarray(i_)
    union += np.asarray(u_)
  np.testing.assert_array_equal(results["confusion_matrix"], expected)
  assert results["confusion_matrix"].dtype == np.int64
  assert np.sum(expected.sum(0) > 0) > 1  # predictions are not one constant class
  ref = metrics.summarize(expected, NAMES, boundary=(inter, union))
  for key in ("mIoU", "mAcc", "aAcc", "mBIoU", "FWIoU", "mDice"):
    assert results[key] == ref[key], key


def _mmseg_slide_grid(h, w, crop, stride):
  """The windows mmseg's EncoderDecoder.slide_inference visits, recorded from the real code."""
  import_mmseg()
  import types

  import torch
  from mmseg.models.segmentors import EncoderDecoder
  seen = []

  def encode_decode(crop_img, metas):
    seen.append(tuple(crop_img.shape[2:]))
    return torch.zeros(crop_img.shape[0], 2, *crop_img.shape[2:])

  fake = types.SimpleNamespace(test_cfg=types.SimpleNamespace(stride=stride, crop_size=crop),
                               out_channels=2, encode_decode=encode_decode)
  inputs = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
  # Record corners through the crop contents: each crop's first value is y1 * w + x1.
  corners = []

  def recording(crop_img, metas):
    first = int(crop_img[0, 0, 0, 0])
    corners.append((first // w, first % w))
    return encode_decode(crop_img, metas)

  fake.encode_decode = recording
  EncoderDecoder.slide_inference(fake, inputs, [{}])
  return corners, seen


@pytest.mark.parametrize("h,w", [(20, 26), (32, 32), (45, 70), (33, 31)])
def test_slide_windows_equal_mmsegs(h, w):
  crop, stride = (32, 32), (21, 21)
  corners, shapes = _mmseg_slide_grid(h, w, crop, stride)
  assert evaluate.slide_windows(h, w, crop, stride) == corners
  assert set(shapes) == {(min(32, h), min(32, w))}


def test_slide_with_window_equal_to_image_is_whole(folder_setup):
  config, model, variables = folder_setup
  x = jax.random.normal(jax.random.key(1), (2, 40, 24, 3))
  whole = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  config.eval.mode, config.eval.crop_size, config.eval.stride = "slide", (40, 24), (40, 24)
  slide = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  np.testing.assert_array_equal(np.asarray(slide), np.asarray(whole))
  # A window larger than the image is one window of the image's own size (no padding).
  config.eval.crop_size, config.eval.stride = (64, 64), (32, 32)
  big = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  np.testing.assert_array_equal(np.asarray(big), np.asarray(whole))
  # Overlapping windows average their logits, computed here by hand.
  config.eval.crop_size, config.eval.stride = (24, 24), (16, 16)
  got = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  config.eval.mode = "whole"
  whole_fn = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))
  total, count = np.zeros((2, 40, 24, 5)), np.zeros((1, 40, 24, 1))
  for y in (0, 16):
    total[:, y:y + 24] += np.asarray(whole_fn(variables, x[:, y:y + 24]))
    count[:, y:y + 24] += 1
  np.testing.assert_allclose(np.asarray(got), total / count, rtol=1e-5, atol=1e-5)


def test_flip_tta_on_a_mirror_symmetric_image(folder_setup):
  """For an image equal to its mirror, flip TTA is the average of p and mirror(p), p the plain
  output's probabilities (a model is not mirror-equivariant, so p itself is not symmetric)."""
  config, model, variables = folder_setup
  half = jax.random.normal(jax.random.key(2), (1, 32, 16, 3))
  x = jnp.concatenate([half, half[:, :, ::-1]], axis=2)
  plain = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  config.eval.flip = True
  tta = jax.jit(evaluate.make_logits_fn(model, config.eval, 5))(variables, x)
  p = jax.nn.softmax(plain, -1)
  np.testing.assert_allclose(np.exp(np.asarray(tta)), (p + p[:, :, ::-1]) / 2, atol=1e-6)
  assert not np.allclose(p, p[:, :, ::-1], atol=1e-3)  # the check above is not vacuous
