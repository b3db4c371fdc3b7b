"""Tiny copies of the public datasets in their official on-disk layouts, for reader tests.

Each `write_<data.name>(root)` writes a few odd-sized images (JPEG or PNG, as released) with
label files in the release's own format, covering that dataset's special cases, and returns
{split: {name: expected mask}} in the reader's order, the masks as the class ids the reader
must produce (uint8, 255 = ignore). The expected ids come from small tables written out here,
independently of the readers' lookup tables. Plain functions (no pytest fixtures), so that
other tests, e.g. of TFDS preparation, can reuse them; `WRITERS` maps data.name to its writer.
"""
import os
from typing import Dict

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from segjax.data.base import default_palette

Expected = Dict[str, Dict[str, np.ndarray]]

SIZES = ((23, 31), (31, 23), (17, 29), (29, 17))  # (h, w), odd on purpose


def _rng(seed: int) -> np.random.RandomState:
  return np.random.RandomState(seed)


def _image(path, hw, rng) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rng.randint(0, 255, tuple(hw) + (3,), dtype=np.uint8)).save(path)


def _png(path, labels: np.ndarray, palette=None) -> None:
  """An 8-bit label PNG: grey ("L"), or palette ("P", index = id) when a palette is given."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.fromarray(labels.astype(np.uint8))
  if palette is not None:
    img.putpalette(np.asarray(palette, np.uint8).ravel().tolist())  # "L" -> "P", same values
  img.save(path)


def _draw(rng, hw, values) -> np.ndarray:
  """A label map with every value of `values` present (the first len(values) pixels)."""
  values = np.asarray(values)
  labels = rng.choice(values, size=hw)
  labels.flat[:len(values)] = values
  return labels


def _lists(path, ids) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(i + "\n" for i in ids)


# ----------------------------------------------------------------------------- ADE20K

def write_ade20k(root) -> Expected:
  """ADEChallengeData2016/: 0 (no class) must become 255, k become k - 1."""
  rng, expected = _rng(0), {}
  for split, folder, n in (("train", "training", 3), ("val", "validation", 2)):
    expected[split] = {}
    for i in range(n):
      stem = f"ADE_{split}_{i + 1:08d}"
      hw = SIZES[i]
      raw = _draw(rng, hw, [0, 1, 2, 75, 149, 150])
      _image(os.path.join(root, "images", folder, stem + ".jpg"), hw, rng)
      _png(os.path.join(root, "annotations", folder, stem + ".png"), raw)
      expected[split][stem] = np.where(raw == 0, 255, raw - 1).astype(np.uint8)
  for name in ("objectInfo150.txt", "sceneCategories.txt"):  # shipped beside the folders
    with open(os.path.join(root, name), "w") as f:
      f.write("\n")
  return expected


# ----------------------------------------------------------------------------- VOC aug

def _sbd_mat(path, seg: np.ndarray) -> None:
  """An SBD dataset/cls/*.mat: struct GTcls with Segmentation, Boundaries (a 20x1 cell of
  sparse maps) and CategoriesPresent, the fields of the release."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  boundaries = np.empty((20, 1), object)
  for c in range(20):
    boundaries[c, 0] = scipy.sparse.csc_matrix(seg == c + 1)
  present = np.array([[c] for c in np.unique(seg) if c > 0], np.uint8)
  scipy.io.savemat(path, {"GTcls": {"Segmentation": seg.astype(np.uint8),
                                    "Boundaries": boundaries,
                                    "CategoriesPresent": present}})


def write_voc_aug(root) -> Expected:
  """VOCdevkit/VOC2012 + benchmark_RELEASE (SBD). The id lists exercise mmseg's aug rule:

    VOC train  a b          VOC val  c d
    SBD train  b e g        SBD val  c f
    -> train = a b (VOC PNGs, even though SBD has b), then e f g (SBD .mat); val = c d.
  VOC PNGs carry 255 boundaries; SBD's .mat maps hold no 255.
  """
  rng = _rng(1)
  a, b, c, d, e, f, g = ("2007_000032", "2007_000039", "2007_000033", "2007_000042",
                         "2008_000002", "2008_000003", "2008_000007")
  voc = os.path.join(root, "VOCdevkit", "VOC2012")
  sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
  _lists(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), [a, b])
  _lists(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), [c, d])
  _lists(os.path.join(voc, "ImageSets", "Segmentation", "trainval.txt"), [a, b, c, d])
  _lists(os.path.join(sbd, "train.txt"), [b, e, g])
  _lists(os.path.join(sbd, "val.txt"), [c, f])
  labels = {}
  for k, i in enumerate((a, b, c, d, e, f, g)):
    hw = SIZES[k % len(SIZES)]
    _image(os.path.join(voc, "JPEGImages", i + ".jpg"), hw, rng)
    if i in (a, b, c, d):
      labels[i] = _draw(rng, hw, [0, 1, 15, 20, 255])
      _png(os.path.join(voc, "SegmentationClass", i + ".png"), labels[i],
           default_palette(256))  # VOC's own palette
    if i in (b, c, e, f, g):
      seg = _draw(rng, hw, [0, 2, 7, 20])
      _sbd_mat(os.path.join(sbd, "cls", i + ".mat"), seg)
      labels.setdefault(i, seg)
  _image(os.path.join(voc, "JPEGImages", "2009_000001.jpg"), SIZES[0], rng)  # detection only
  return {"train": {i: labels[i].astype(np.uint8) for i in (a, b, e, f, g)},
          "val": {i: labels[i].astype(np.uint8) for i in (c, d)}}


# ----------------------------------------------------------------------------- PASCAL-Context

# 459-class id of the release's labels.txt -> class of the 60-class form (0 = background):
# 1 accordion and 459 zipper are outside the 59 and so background.
CONTEXT_60 = {0: 0, 1: 0, 2: 1, 9: 2, 284: 37, 440: 56, 458: 59, 459: 0}


def _write_pascal_context(root) -> Dict[str, Dict[str, np.ndarray]]:
  """VOCdevkit/VOC2010 + trainval/*.mat (LabelMap uint16); returns the raw LabelMaps."""
  rng = _rng(2)
  voc = os.path.join(root, "VOCdevkit", "VOC2010")
  splits = {"train": ["2008_000002", "2008_000007", "2008_000008"],
            "val": ["2008_000009", "2008_000016"]}
  raw = {}
  for split, ids in splits.items():
    _lists(os.path.join(voc, "ImageSets", "Main", split + ".txt"), ids)
    raw[split] = {}
    for k, i in enumerate(ids):
      hw = SIZES[k]
      _image(os.path.join(voc, "JPEGImages", i + ".jpg"), hw, rng)
      labels = _draw(rng, hw, sorted(CONTEXT_60)).astype(np.uint16)
      os.makedirs(os.path.join(root, "trainval"), exist_ok=True)
      scipy.io.savemat(os.path.join(root, "trainval", i + ".mat"), {"LabelMap": labels})
      raw[split][i] = labels
  # Class lists of the detection task share the folder (two columns: id and +-1).
  with open(os.path.join(voc, "ImageSets", "Main", "aeroplane_train.txt"), "w") as f:
    f.write("2008_000002 -1\n")
  return raw


def write_pascal_context_60(root) -> Expected:
  raw = _write_pascal_context(root)
  lut = np.vectorize(CONTEXT_60.get)
  return {s: {i: lut(m).astype(np.uint8) for i, m in ms.items()} for s, ms in raw.items()}


def write_pascal_context_59(root) -> Expected:
  """As the 60-class form with mmseg's reduce_zero_label: background -> 255, k -> k - 1."""
  sixty = write_pascal_context_60(root)
  return {s: {i: np.where(m == 0, 255, m - 1).astype(np.uint8) for i, m in ms.items()}
          for s, ms in sixty.items()}


# ----------------------------------------------------------------------------- COCO-Stuff 164k

# stuffthingmaps id -> mmseg trainId (tools/dataset_converters/coco_stuff164k.py); 11 and 90
# are thing ids no COCO category uses, 255 is unlabelled.
COCO_STUFF = {0: 0, 10: 10, 11: 255, 12: 11, 90: 255, 91: 80, 150: 139, 181: 170, 255: 255}


def write_coco_stuff164k(root) -> Expected:
  """images/{train,val}2017/*.jpg + annotations/{train,val}2017/*.png (stuffthingmaps)."""
  rng, expected = _rng(3), {}
  for split, folder, stems in (("train", "train2017", ("000000000009", "000000000025",
                                                        "000000000030")),
                               ("val", "val2017", ("000000000139", "000000000285"))):
    expected[split] = {}
    for k, stem in enumerate(stems):
      hw = SIZES[k]
      raw = _draw(rng, hw, sorted(COCO_STUFF))
      _image(os.path.join(root, "images", folder, stem + ".jpg"), hw, rng)
      _png(os.path.join(root, "annotations", folder, stem + ".png"), raw)
      # mmseg's converter output beside the maps must not be taken for a map.
      _png(os.path.join(root, "annotations", folder, stem + "_labelTrainIds.png"), raw * 0)
      expected[split][stem] = np.vectorize(COCO_STUFF.get)(raw).astype(np.uint8)
  return expected


# ----------------------------------------------------------------------------- Mapillary Vistas

def _write_mapillary(root) -> Dict[str, Expected]:
  """training/ and validation/ with images/, v1.2/labels/ and v2.0/labels/ (palette PNGs)."""
  rng = _rng(4)
  out = {"v1.2": {}, "v2.0": {}}
  palette = [(i, 255 - i, (7 * i) % 256) for i in range(256)]
  for split, folder, n in (("train", "training", 3), ("val", "validation", 2)):
    for version in out:
      out[version][split] = {}
    for k in range(n):
      key = f"{folder[:2]}{k}Xq_7bZ-9kLmN0pQ"  # Mapillary keys: 22 url-safe characters
      hw = SIZES[k]
      _image(os.path.join(root, folder, "images", key + ".jpg"), hw, rng)
      v1 = _draw(rng, hw, [0, 1, 30, 64, 65])
      v2 = _draw(rng, hw, [0, 1, 60, 122, 123])
      _png(os.path.join(root, folder, "v1.2", "labels", key + ".png"), v1, palette)
      _png(os.path.join(root, folder, "v2.0", "labels", key + ".png"), v2, palette)
      for version in out:  # the release's other folders hold RGB and instance PNGs
        os.makedirs(os.path.join(root, folder, version, "instances"), exist_ok=True)
      out["v1.2"][split][key] = np.where(v1 == 65, 255, v1).astype(np.uint8)
      out["v2.0"][split][key] = v2.astype(np.uint8)
  return out


def write_mapillary_v1_2(root) -> Expected:
  """65 classes: v1.2's id 65 "Unlabeled" -> 255."""
  return _write_mapillary(root)["v1.2"]


def write_mapillary_v2(root) -> Expected:
  """124 classes: every v2.0 id is a class, 123 "Unlabeled" included."""
  return _write_mapillary(root)["v2.0"]


# ----------------------------------------------------------------------------- Cityscapes

CITYSCAPES = {0: 255, 7: 0, 8: 1, 24: 11, 26: 13, 33: 18}  # labelId -> trainId


def write_cityscapes_coarse(root) -> Expected:
  """leftImg8bit/{train,val,train_extra}, gtFine/{train,val}, gtCoarse/{train,val,train_extra}.
  Returns the expectations of the splits "train", "val", "train_extra", "gtCoarse/train" and
  "train+train_extra"."""
  rng, expected = _rng(5), {}
  cities = {"train": "aachen", "val": "frankfurt", "train_extra": "augsburg"}
  for split, city in cities.items():
    for k in range(2):
      stem = f"{city}_{k:06d}_000019"
      hw = SIZES[k]
      _image(os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), hw, rng)
      gts = ("gtCoarse",) if split == "train_extra" else ("gtFine", "gtCoarse")
      for gt in gts:
        ids = _draw(rng, hw, sorted(CITYSCAPES))
        _png(os.path.join(root, gt, split, city, f"{stem}_{gt}_labelIds.png"), ids)
        _png(os.path.join(root, gt, split, city, f"{stem}_{gt}_instanceIds.png"), ids)
        key = split if gt == "gtFine" or split == "train_extra" else f"gtCoarse/{split}"
        expected.setdefault(key, {})[stem] = np.vectorize(CITYSCAPES.get)(ids).astype(np.uint8)
  expected["train+train_extra"] = {**expected["train"], **expected["train_extra"]}
  return expected


WRITERS = {
    "ade20k": write_ade20k,
    "voc_aug": write_voc_aug,
    "pascal_context_59": write_pascal_context_59,
    "pascal_context_60": write_pascal_context_60,
    "coco_stuff164k": write_coco_stuff164k,
    "mapillary_v1_2": write_mapillary_v1_2,
    "mapillary_v2": write_mapillary_v2,
    "cityscapes": write_cityscapes_coarse,
}
