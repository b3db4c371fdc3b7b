"""The public datasets' readers on tiny copies in their official layouts (dataset_fixtures):
split membership and order, cheap sizes, exact class ids after each dataset's label mapping,
one-line errors naming the missing file, and the configs/common.py data recipes."""
import concurrent.futures
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import common
from segjax import data as data_lib
from segjax.errors import ConfigError, DataError
from tests import dataset_fixtures
from tests.conftest import load_config

NUM_CLASSES = {"ade20k": 150, "voc_aug": 21, "pascal_context_59": 59, "pascal_context_60": 60,
               "coco_stuff164k": 171, "mapillary_v1_2": 65, "mapillary_v2": 124,
               "cityscapes": 19}


def data_cfg(name, root):
  c = load_config("test")
  c.data.name = name
  c.data.root = str(root)
  c.data.num_classes = NUM_CLASSES[name]
  return c.data


@pytest.fixture(scope="module", params=sorted(NUM_CLASSES))
def written(request, tmp_path_factory):
  """(data.name, config.data, {split: {name: expected mask}}) of one dataset's fixture."""
  name = request.param
  root = tmp_path_factory.mktemp(name)
  return name, data_cfg(name, root), dataset_fixtures.WRITERS[name](root)


def test_reader_gives_the_expected_examples_and_ids(written):
  name, cfg, expected = written
  spec = data_lib.spec(cfg)
  assert len(spec.class_names) == len(spec.palette) == NUM_CLASSES[name]
  for split, masks in expected.items():
    source = data_lib.build_source(cfg, split)
    assert tuple(source.class_names) == tuple(spec.class_names)
    assert [source.name(i) for i in range(len(source))] == list(masks), split
    for i in range(len(source)):
      image, mask = source.load(i)
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
      assert mask.dtype == np.uint8
      assert tuple(source.size(i)) == image.shape[:2] == mask.shape
      np.testing.assert_array_equal(mask, masks[source.name(i)], err_msg=f"{split} {i}")


def test_loads_are_thread_safe(written):
  """tf.data calls load from several threads at once; results must not depend on it."""
  _, cfg, expected = written
  source = data_lib.build_source(cfg, next(iter(expected)))
  order = list(range(len(source))) * 4
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    masks = list(pool.map(lambda i: source.load(i)[1], order))
  for i, mask in zip(order, masks):
    np.testing.assert_array_equal(mask, expected[next(iter(expected))][source.name(i)])


def test_special_cases_are_in_the_fixtures(tmp_path):
  """The fixtures hold each mapping's corner (so the exact-id test above covers it)."""
  ade = dataset_fixtures.write_ade20k(tmp_path / "ade")
  raw = np.asarray(Image.open(tmp_path / "ade/annotations/training/ADE_train_00000001.png"))
  got = ade["train"]["ADE_train_00000001"]
  assert (raw == 0).any() and (got[raw == 0] == 255).all() and (got[raw == 150] == 149).all()

  voc = dataset_fixtures.write_voc_aug(tmp_path / "voc")
  assert list(voc["train"]) == ["2007_000032", "2007_000039",  # VOC train, VOC's PNG labels
                                "2008_000002", "2008_000003", "2008_000007"]  # SBD only
  assert list(voc["val"]) == ["2007_000033", "2007_000042"]  # in SBD val too, still val only
  assert (voc["train"]["2007_000039"] == 255).any()  # VOC's boundary, not SBD's .mat
  assert not any((m == 255).any() for k, m in voc["train"].items() if k.startswith("2008"))

  coco = dataset_fixtures.write_coco_stuff164k(tmp_path / "coco")
  raw = np.asarray(Image.open(tmp_path / "coco/annotations/val2017/000000000139.png"))
  got = coco["val"]["000000000139"]
  assert (got[raw == 11] == 255).all() and (got[raw == 12] == 11).all()
  assert (got[raw == 181] == 170).all() and (raw == 11).any()

  v1 = dataset_fixtures.write_mapillary_v1_2(tmp_path / "mapillary")
  v2 = dataset_fixtures.write_mapillary_v2(tmp_path / "mapillary")
  key = next(iter(v1["train"]))
  raw = np.asarray(Image.open(tmp_path / f"mapillary/training/v1.2/labels/{key}.png"))
  assert (v1["train"][key][raw == 65] == 255).all() and (raw == 65).any()
  assert (v2["train"][key] == 123).any()

  p60 = dataset_fixtures.write_pascal_context_60(tmp_path / "context")
  p59 = dataset_fixtures.write_pascal_context_59(tmp_path / "context")
  m60, m59 = p60["train"]["2008_000002"], p59["train"]["2008_000002"]
  assert (m60 == 0).any() and (m59[m60 == 0] == 255).all() and (m59[m60 == 59] == 58).all()


def test_context_reads_the_release_mat_files(tmp_path):
  """LabelMap ids -> classes through mmseg's _mapping; 459-class ids outside the 59 and 0 are
  background; an id beyond 459 is refused, naming the file."""
  import scipy.io
  dataset_fixtures.write_pascal_context_60(tmp_path)
  source = data_lib.build_source(data_cfg("pascal_context_60", tmp_path), "val")
  labels = scipy.io.loadmat(tmp_path / "trainval/2008_000009.mat")["LabelMap"]
  mask = source.load(0)[1]
  for raw_id, cls in ((2, 1), (9, 2), (284, 37), (458, 59), (1, 0), (459, 0), (0, 0)):
    assert (mask[labels == raw_id] == cls).all() and (labels == raw_id).any(), raw_id
  labels[0, 0] = 460
  scipy.io.savemat(tmp_path / "trainval/2008_000009.mat", {"LabelMap": labels})
  with pytest.raises(DataError, match=r"2008_000009.mat: LabelMap values 0..460 outside 0..459"):
    source.load(0)


def test_labels_outside_the_classes_are_refused(tmp_path):
  dataset_fixtures.write_coco_stuff164k(tmp_path / "coco")
  path = tmp_path / "coco/annotations/val2017/000000000139.png"
  labels = np.asarray(Image.open(path)).copy()
  labels[0, 0] = 200  # no stuffthingmaps id
  Image.fromarray(labels).save(path)
  with pytest.raises(DataError, match=r"000000000139.png: label value\(s\) \[200\] outside"):
    data_lib.build_source(data_cfg("coco_stuff164k", tmp_path / "coco"), "val").load(0)
  dataset_fixtures.write_mapillary_v2(tmp_path / "map")
  path = next((tmp_path / "map/validation/v2.0/labels").glob("*.png"))
  Image.fromarray(np.full((23, 31), 124, np.uint8)).save(path)
  with pytest.raises(DataError, match=r"label value\(s\) \[124\] outside 0..123"):
    data_lib.build_source(data_cfg("mapillary_v2", tmp_path / "map"), "val").load(0)


def test_sbd_mat_without_segmentation_is_one_clear_error(tmp_path):
  import scipy.io
  dataset_fixtures.write_voc_aug(tmp_path)
  path = tmp_path / "benchmark_RELEASE/dataset/cls/2008_000002.mat"
  scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((23, 31), np.uint8)}})
  source = data_lib.build_source(data_cfg("voc_aug", tmp_path), "train")
  with pytest.raises(DataError, match=r"2008_000002.mat: no GTcls.Segmentation"):
    source.load(2)


# (data.name, a label file of its fixture relative to the root, the split that needs it)
LABEL_FILES = [
    ("ade20k", "annotations/validation/ADE_val_00000002.png", "val"),
    ("voc_aug", "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png", "train"),
    ("voc_aug", "benchmark_RELEASE/dataset/cls/2008_000003.mat", "train"),
    ("voc_aug", "benchmark_RELEASE/dataset/val.txt", "train"),
    ("pascal_context_59", "trainval/2008_000016.mat", "val"),
    ("pascal_context_60", "VOCdevkit/VOC2010/ImageSets/Main/train.txt", "train"),
    ("coco_stuff164k", "annotations/train2017/000000000025.png", "train"),
    ("mapillary_v1_2", "validation/v1.2/labels/va1Xq_7bZ-9kLmN0pQ.png", "val"),
    ("mapillary_v2", "training/v2.0/labels/tr0Xq_7bZ-9kLmN0pQ.png", "train"),
    ("cityscapes", "gtCoarse/train_extra/augsburg/augsburg_000001_000019_gtCoarse_labelIds.png",
     "train+train_extra"),
]


@pytest.mark.parametrize("name,rel,split", LABEL_FILES)
def test_a_missing_file_is_named(tmp_path, name, rel, split):
  dataset_fixtures.WRITERS[name](tmp_path)
  os.remove(tmp_path / rel)
  with pytest.raises(DataError) as e:
    data_lib.build_source(data_cfg(name, tmp_path), split)
  assert str(tmp_path / rel) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(NUM_CLASSES))
def test_a_missing_dataset_names_the_path_and_the_layout(tmp_path, name):
  with pytest.raises(DataError) as e:
    data_lib.build_source(data_cfg(name, tmp_path / "nowhere"), "train")
  msg = str(e.value)
  assert str(tmp_path / "nowhere") in msg and "Expected" in msg and "\n" not in msg
  assert "--config.data.root" in msg


def test_voc_val_does_not_need_sbd_and_missing_sbd_is_named(tmp_path):
  dataset_fixtures.write_voc_aug(tmp_path)
  os.rename(tmp_path / "benchmark_RELEASE", tmp_path / "elsewhere")
  assert len(data_lib.build_source(data_cfg("voc_aug", tmp_path), "val")) == 2
  with pytest.raises(DataError, match="benchmark_RELEASE/dataset/train.txt not found"):
    data_lib.build_source(data_cfg("voc_aug", tmp_path), "train")
  os.rename(tmp_path / "elsewhere", tmp_path / "benchmark_RELEASE")
  shutil.rmtree(tmp_path / "benchmark_RELEASE/dataset/cls")
  with pytest.raises(DataError, match=r"benchmark_RELEASE/dataset/cls/2008_000002.mat missing"):
    data_lib.build_source(data_cfg("voc_aug", tmp_path), "train")


def test_cityscapes_fine_is_unchanged_and_coarse_splits_are_checked(tmp_path):
  dataset_fixtures.write_cityscapes_coarse(tmp_path)
  cfg = data_cfg("cityscapes", tmp_path)
  fine = data_lib.build_source(cfg, "train")
  assert all("/gtFine/train/" in m for m in fine.masks)
  assert all("_gtCoarse_" in m for m in data_lib.build_source(cfg, "train_extra").masks)
  with pytest.raises(ConfigError, match="train_extra has coarse labels only"):
    data_lib.build_source(cfg, "gtFine/train_extra")
  with pytest.raises(ConfigError, match="'gtMedium/train' is not <split>"):
    data_lib.build_source(cfg, "gtMedium/train")


@pytest.mark.parametrize("name", ["ade20k", "voc_aug", "pascal_context_59", "coco_stuff164k",
                                  "mapillary_v2"])
def test_unknown_split_is_a_config_error(tmp_path, name):
  with pytest.raises(ConfigError, match="has no split 'test'"):
    data_lib.build_source(data_cfg(name, tmp_path), "test")


@pytest.mark.parametrize("recipe,name,crop,base", [
    (common.ade20k_config, "ade20k", (512, 512), (512, 2048)),
    (common.voc_aug_config, "voc_aug", (512, 512), (512, 2048)),
    (lambda: common.pascal_context_config(59), "pascal_context_59", (480, 480), (520, 520)),
    (lambda: common.pascal_context_config(60), "pascal_context_60", (480, 480), (520, 520)),
    (common.coco_stuff164k_config, "coco_stuff164k", (512, 512), (512, 2048)),
    (lambda: common.mapillary_config("v1.2"), "mapillary_v1_2", (1024, 1024), (1024, 2048)),
    (lambda: common.mapillary_config("v2.0"), "mapillary_v2", (1024, 1024), (1024, 2048)),
])
def test_dataset_recipes(recipe, name, crop, base):
  c = recipe()
  assert c.data.name == name and c.data.num_classes == NUM_CLASSES[name]
  assert len(data_lib.class_names(c.data)) == c.data.num_classes
  assert tuple(c.data.crop_size) == crop and tuple(c.data.base_size) == base
  assert tuple(c.data.ratio_range) == (0.5, 2.0) and c.data.cat_max_ratio == 0.75
  assert set(c.to_dict()) == set(common.base_config().to_dict())  # no new top-level keys
  assert set(c.data.to_dict()) == set(common.base_config().data.to_dict())


def test_a_dataset_trains_and_evaluates_from_its_tfds_copy(tmp_path):
  """Fixture in the official layout -> prepare_data -> one training step and an evaluation
  of every val image at its own size, through train.train_and_evaluate (what segjax.main
  runs). ADE20K stands for all: every reader meets the trainer through the same Source and
  TfdsSource (each was run this way once: voc_aug and cityscapes took ~50 s each on 2 busy
  cores, too much to repeat per dataset in CI)."""
  name = "ade20k"
  from segjax import train
  from segjax.data import tfds as tfds_lib
  from tests.conftest import load_config
  expected = dataset_fixtures.WRITERS[name](tmp_path / "raw")
  config = load_config("test")
  config.data.name = name
  config.data.root = str(tmp_path / "raw")
  config.data.num_classes = len(data_lib.class_names(config.data))
  config.model.decode_head.channels = 8
  config.data.base_size = (32, 40)
  tfds_lib.prepare(name, str(tmp_path / "raw"), str(tmp_path / "tfds"),
                   splits=["train", "val"], data_cfg=config.data, progress=False)
  config.data.tfds_dir = str(tmp_path / "tfds")
  config.train.num_steps, config.train.eval_every, config.train.checkpoint_every = 1, 1, 1
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_images"] == len(expected["val"])
  labelled = sum(int((m != 255).sum()) for m in expected["val"].values())
  assert results["num_pixels"] == labelled  # scored at the original size, every pixel once
