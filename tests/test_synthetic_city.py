"""segjax/data/synthetic_city.py: procedural street scenes with Cityscapes' classes.

Pure function of (seed, split, index); every class appears with Cityscapes-like imbalance;
colour alone does not give the labels away; the mask is what was painted; and the dataset
trains through the registry and the tf.data pipeline like any other."""
import subprocess
import sys

import numpy as np
import pytest

from segjax import data as data_lib
from segjax.data import cityscapes, pipeline, synthetic_city
from segjax.data.synthetic_city import SyntheticCity
from tests.conftest import REPO, load_config

NUM_CLASSES = len(cityscapes.CLASS_NAMES)


@pytest.fixture(scope="module")
def train_examples():
  """200 training scenes at the default 256x512 (~5-10 s): the statistics below need them."""
  source = SyntheticCity("train", 200)
  return [source.load(i) for i in range(len(source))]


def test_deterministic_per_seed_split_index():
  image, mask = SyntheticCity("train", 4).load(2)
  assert image.shape == (256, 512, 3) and image.dtype == np.uint8
  assert mask.shape == (256, 512) and mask.dtype == np.uint8
  again = SyntheticCity("train", 4).load(2)
  np.testing.assert_array_equal(image, again[0])
  np.testing.assert_array_equal(mask, again[1])
  for other in (SyntheticCity("train", 4).load(3), SyntheticCity("val", 4).load(2),
                SyntheticCity("train", 4, seed=1).load(2)):
    assert not np.array_equal(mask, other[1]) and not np.array_equal(image, other[0])


def test_any_image_size_and_the_source_interface():
  source = SyntheticCity("val", 3, (48, 80))
  assert len(source) == 3 and source.size(1) == (48, 80)
  image, mask = source.load(1)
  assert image.shape == (48, 80, 3) and mask.shape == (48, 80)
  with pytest.raises(ValueError, match="split"):
    SyntheticCity("training", 3)


def test_registered_by_importing_segjax_data():
  """What segjax.main sees: a fresh interpreter that imports only segjax.data (here this
  module's own import of synthetic_city would register it anyway)."""
  code = "from segjax import data; data.DATASETS.get('synthetic_city')"
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_classes_and_palette_are_cityscapes_train_ids():
  spec = data_lib.DATASETS.get("synthetic_city")
  assert spec.class_names is cityscapes.CLASS_NAMES and spec.palette is cityscapes.PALETTE
  assert SyntheticCity.class_names is cityscapes.CLASS_NAMES
  assert synthetic_city.POLE == cityscapes.CLASS_NAMES.index("pole")
  assert synthetic_city.BICYCLE == NUM_CLASSES - 1


def test_every_class_appears_with_strong_imbalance(train_examples):
  counts = np.zeros(256, np.int64)
  for _, mask in train_examples:
    counts += np.bincount(mask.ravel(), minlength=256)
  assert counts[NUM_CLASSES:].sum() == 0  # labels 0..18 only (no ignore pixels either)
  fraction = counts[:NUM_CLASSES] / counts.sum()
  missing = [n for n, f in zip(cityscapes.CLASS_NAMES, fraction) if f == 0]
  assert not missing, f"classes never drawn in 200 scenes: {missing}"
  assert fraction.max() / fraction.min() > 50
  large = [cityscapes.CLASS_NAMES.index(n) for n in ("road", "building", "sky", "vegetation")]
  small = [cityscapes.CLASS_NAMES.index(n)
           for n in ("person", "rider", "bicycle", "motorcycle", "pole", "traffic sign")]
  assert fraction[large].min() > 10 * fraction[small].max()
  assert fraction[cityscapes.CLASS_NAMES.index("road")] > 0.2
  # The shares the studies' class-weighted loss is built from are these scenes' shares.
  np.testing.assert_allclose(fraction, synthetic_city.CLASS_FREQUENCIES, rtol=1e-3)
  few = np.bincount(np.concatenate([m.ravel() for _, m in train_examples[:3]]),
                    minlength=NUM_CLASSES)
  np.testing.assert_allclose(synthetic_city.class_frequencies(3), few / few.sum(), rtol=1e-12)


def test_colour_does_not_give_the_labels_away(train_examples):
  """Every class varies in colour (texture, lighting, paint), and the best colour-to-class
  lookup, fitted on the very pixels it is scored on, stays far from the labels (mIoU)."""
  images = np.stack([image for image, _ in train_examples[:40]]).reshape(-1, 3)
  masks = np.stack([mask for _, mask in train_examples[:40]]).reshape(-1)
  for c in np.unique(masks):
    assert images[masks == c].std(axis=0).max() > 10, cityscapes.CLASS_NAMES[c]
  q = images.astype(np.int64) // 16
  colour = (q[:, 0] * 16 + q[:, 1]) * 16 + q[:, 2]
  table = np.zeros((16 ** 3, NUM_CLASSES), np.int64)
  np.add.at(table, (colour, masks), 1)
  predicted = table.argmax(1)[colour]
  present = np.unique(masks)
  iou = [((predicted == c) & (masks == c)).sum() / ((predicted == c) | (masks == c)).sum()
         for c in present]
  assert np.mean(iou) < 0.4


def test_paint_writes_image_and_mask_through_the_same_pixels():
  """The one primitive every object goes through: a pixel changes colour iff it takes the
  class, so the mask is exactly what is visible (later paints cover earlier ones)."""
  scene = synthetic_city._Scene(np.random.default_rng(0), (32, 48))
  scene.image[:] = 7.0
  scene.mask[:] = synthetic_city.SKY
  win = (4, 20, 10, 30)
  inside = np.random.default_rng(1).random((16, 20)) < 0.5
  look = synthetic_city.Look(synthetic_city._rgb(((200, 10, 10), (10, 200, 10))),
                             index=(np.arange(20)[None, :] % 2 == 0).view(np.uint8) *
                             np.ones((16, 1), np.uint8), light=1.0)
  scene._paint(win, inside, look, synthetic_city.CAR, np.float32(0.0), 1.0)
  expected = np.full((32, 48), synthetic_city.SKY, np.uint8)
  expected[4:20, 10:30][inside] = synthetic_city.CAR
  np.testing.assert_array_equal(scene.mask, expected)
  changed = (scene.image != 7.0).any(axis=0)
  np.testing.assert_array_equal(changed, expected == synthetic_city.CAR)


def test_trains_through_the_registry_and_pipeline():
  config = load_config("segformer_b0_synthetic_city")
  config.data.synthetic_train_size = 8
  config.data.num_parallel_calls = 2
  source = data_lib.build_source(config.data, "train")
  assert isinstance(source, SyntheticCity) and source.image_size == (256, 512)
  assert len(data_lib.build_source(config.data, "val")) == config.data.synthetic_eval_size
  batch = next(pipeline.train_batches(source, config.data, seed=0, global_batch=8))
  assert batch["image"].shape == (8, 128, 256, 3)
  assert batch["label"].shape == (8, 128, 256)
  labels = np.unique(batch["label"])
  assert set(labels.tolist()) <= set(range(NUM_CLASSES)) | {data_lib.IGNORE_INDEX}
  assert len(set(labels.tolist()) - {data_lib.IGNORE_INDEX}) >= 4
