"""Dataset readers on fixtures in their official layouts, and the pipelines' guarantees."""
import os

import numpy as np
import pytest
from PIL import Image

from segjax import data as data_lib
from segjax.data import cityscapes, pipeline
from segjax.errors import ConfigError, DataError
from tests.conftest import load_config


def write_cityscapes(root, split="val", cities=("aachen", "bremen"), per_city=2, hw=(24, 40),
                     seed=0):
  """A tiny Cityscapes in the official layout; returns {stem: labelIds array}."""
  rng = np.random.RandomState(seed)
  written = {}
  for city in cities:
    os.makedirs(root / "leftImg8bit" / split / city, exist_ok=True)
    os.makedirs(root / "gtFine" / split / city, exist_ok=True)
    for i in range(per_city):
      stem = f"{city}_{i:06d}_000019"
      image = rng.randint(0, 255, hw + (3,), dtype=np.uint8)
      label_ids = rng.randint(0, 34, hw).astype(np.uint8)
      gt = root / "gtFine" / split / city
      Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
      Image.fromarray(label_ids).save(gt / f"{stem}_gtFine_labelIds.png")
      # Distractors that share the folder in the real dataset.
      Image.fromarray(label_ids).save(gt / f"{stem}_gtFine_instanceIds.png")
      written[stem] = label_ids
  return written


def test_cityscapes_reader_maps_label_ids_to_train_ids(tmp_path):
  written = write_cityscapes(tmp_path)
  source = cityscapes.Cityscapes(str(tmp_path), "val")
  assert len(source) == 4
  official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
  for i in range(len(source)):
    image, mask = source.load(i)
    label_ids = written[source.name(i)]
    assert image.shape == (24, 40, 3) and mask.shape == (24, 40)
    expected = np.vectorize(lambda v: official.get(int(v), 255))(label_ids)
    np.testing.assert_array_equal(mask, expected)
  assert (mask == 255).any() and (mask == 18).any()


def test_missing_cityscapes_names_path_layout_and_flag(tmp_path):
  with pytest.raises(DataError) as e:
    cityscapes.Cityscapes(str(tmp_path / "nowhere"), "train")
  msg = str(e.value)
  assert "nowhere/leftImg8bit/train" in msg and "gtFine" in msg and "--config.data.root" in msg
  assert "\n" not in msg


def test_cityscapes_rejects_non_labelid_masks(tmp_path):
  write_cityscapes(tmp_path, cities=("aachen",), per_city=1)
  path = next((tmp_path / "gtFine" / "val" / "aachen").glob("*_labelIds.png"))
  Image.fromarray(np.full((24, 40), 200, np.uint8)).save(path)
  with pytest.raises(DataError, match=f"{path}: labelId 200"):
    cityscapes.Cityscapes(str(tmp_path), "val").load(0)


def write_folder(root, split="train", n=3, hw=(20, 30), num_classes=3):
  rng = np.random.RandomState(1)
  os.makedirs(root / "images" / split, exist_ok=True)
  os.makedirs(root / "masks" / split, exist_ok=True)
  for i in range(n):
    Image.fromarray(rng.randint(0, 255, hw + (3,), dtype=np.uint8)).save(
        root / "images" / split / f"img{i}.jpg")
    Image.fromarray(rng.randint(0, num_classes, hw).astype(np.uint8)).save(
        root / "masks" / split / f"img{i}.png")


def folder_cfg(root):
  c = load_config("test")
  c.data.name = "folder"
  c.data.root = str(root)
  c.data.num_classes = 3
  c.data.class_names = ("a", "b", "c")
  return c


def test_folder_source_and_its_errors(tmp_path):
  write_folder(tmp_path)
  cfg = folder_cfg(tmp_path)
  source = data_lib.build_source(cfg.data, "train")
  assert len(source) == 3 and source.name(1) == "img1"
  image, mask = source.load(0)
  assert image.shape == (20, 30, 3) and mask.max() < 3

  # Label outside the class range.
  Image.fromarray(np.full((20, 30), 7, np.uint8)).save(tmp_path / "masks/train/img1.png")
  with pytest.raises(DataError, match=r"img1.png: label value\(s\) \[7\] outside 0..2"):
    source.load(1)
  # Mask / image size mismatch.
  Image.fromarray(np.zeros((10, 30), np.uint8)).save(tmp_path / "masks/train/img1.png")
  with pytest.raises(DataError,
                     match=r"img1.png: mask is 30x10 .* but its image .*img1.jpg is 30x20"):
    source.load(1)
  # Corrupt image.
  (tmp_path / "images/train/img2.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(DataError, match=r"img2.jpg: cannot decode image"):
    source.load(2)
  # Missing mask.
  os.remove(tmp_path / "masks/train/img0.png")
  with pytest.raises(DataError, match=r"masks/train/img0.png missing"):
    data_lib.build_source(cfg.data, "train")
  # Class count mismatch.
  Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "masks/train/img0.png")
  cfg.data.num_classes = 4
  with pytest.raises(ConfigError, match="data.num_classes=4 but the folder dataset has 3"):
    data_lib.build_source(cfg.data, "train")


def test_bad_example_inside_the_pipeline_is_one_clear_error(tmp_path):
  write_folder(tmp_path, n=4)
  (tmp_path / "images/train/img2.jpg").write_bytes(b"garbage")
  cfg = folder_cfg(tmp_path)
  source = data_lib.build_source(cfg.data, "train")
  with pytest.raises(DataError, match=r"img2.jpg: cannot decode image"):
    for _ in pipeline.train_batches(source, cfg.data, seed=0, global_batch=4):
      pass


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_train_stream_is_resumable_and_host_independent(test_config):
  source = data_lib.build_source(test_config.data, "train")
  kw = dict(seed=3, global_batch=8)
  full = _take(pipeline.train_batches(source, test_config.data, **kw), 12)  # crosses epochs
  resumed = _take(pipeline.train_batches(source, test_config.data, start_step=7, **kw), 5)
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_allclose(a["image"], b["image"], atol=1e-5)
  # Two hosts: their local batches concatenated are the one-host global batch.
  hosts = [_take(pipeline.train_batches(source, test_config.data, process_index=h,
                                        process_count=2, **kw), 3) for h in range(2)]
  for step in range(3):
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][step]["label"], hosts[1][step]["label"]]), full[step]["label"])
  # Different seed, different data; batches within a run differ.
  other = _take(pipeline.train_batches(source, test_config.data, seed=4, global_batch=8), 1)
  assert not np.array_equal(other[0]["label"], full[0]["label"])
  assert not np.array_equal(full[0]["label"], full[1]["label"])


def test_epochs_are_permutations():
  n, seen = 10, []
  gen = pipeline.stream_positions(n, seed=1, global_batch=5, start_step=0, process_index=0,
                                  process_count=1)
  for _ in range(30):
    seen.append(next(gen))
  for epoch in range(3):
    idx = [i for e, i in seen if e == epoch]
    assert sorted(idx) == list(range(n))
  assert [i for e, i in seen if e == 0] != [i for e, i in seen if e == 1]


def test_synthetic_is_deterministic_and_varied():
  a = data_lib.Synthetic("train", 4, (32, 32), seed=0)
  b = data_lib.Synthetic("train", 4, (32, 32), seed=0)
  np.testing.assert_array_equal(a.load(2)[0], b.load(2)[0])
  assert not np.array_equal(a.load(1)[1], a.load(2)[1])
  val = data_lib.Synthetic("val", 4, (32, 32), seed=0)
  assert not np.array_equal(a.load(0)[0], val.load(0)[0])
  labels = np.concatenate([a.load(i)[1].ravel() for i in range(4)])
  assert len(np.unique(labels)) >= 3
