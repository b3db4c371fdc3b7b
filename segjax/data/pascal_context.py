"""PASCAL-Context (Mottaghi et al. 2014): VOC 2010 images with whole-scene labels, in mmseg's
60-class (59 + background) and 59-class forms.

Two downloads, unpacked side by side in data.root:
  VOCtrainval_03-May-2010.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/):
    {root}/VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    {root}/VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt     4,998 / 5,105 ids
  trainval.tar.gz, the official PASCAL-Context release
  (https://cs.stanford.edu/~roozbeh/pascal-context/):
    {root}/trainval/<id>.mat   MATLAB file, variable LabelMap: uint16 (H, W), 0 = unlabelled,
                               1..459 = the classes of the release's labels.txt
  ({root}/VOCdevkit/VOC2010/trainval/, where many guides unpack it, is read too.)

Why these files and not mmseg's: mmseg's tools/dataset_converters/pascal_context.py renders
labels from the PASCAL in Detail re-encoding (trainval_merged.json, read with the Detail API:
GitHub-only, with a compiled mask extension; PyPI's `detail` is an unrelated package). Its
masks hold the 459-class ids of the 59 most frequent classes and 0 elsewhere (the converter
asserts nothing else occurs), and its `_mapping`, copied below as MAPPING, sends them to
1..59 and 0 = background. The release's LabelMap holds the same ids for all 459 classes: each
of the 59 maps through MAPPING, every other value (0 and the 400 rarer classes, which the
Detail file leaves out) is background. The Detail file's train/val phases (4,998 / 5,105) are
VOC 2010's Main train/val lists, read here.

data.name picks the form, with mmseg 1.2.2's classes and palette:
  pascal_context_60  PascalContextDataset: background is class 0, trained and scored.
  pascal_context_59  PascalContextDataset59 (reduce_zero_label): background becomes 255
                     (ignored) and class k becomes k - 1.
"""
import os

import numpy as np

from segjax.data import ade20k, base
from segjax.data.registry import DATASETS
from segjax.errors import ConfigError, DataError

CLASS_NAMES_60 = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass",
    "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate",
    "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water",
    "window", "wood")

# mmseg's PascalContextDataset palette is the first 60 colours of its ADE20K palette.
PALETTE_60 = ade20k.PALETTE[:60]

CLASS_NAMES_59 = CLASS_NAMES_60[1:]
PALETTE_59 = PALETTE_60[1:]

# The 459-class ids of the 60 classes (0 = background), sorted: class k is MAPPING[k].
# mmseg tools/dataset_converters/pascal_context.py `_mapping`.
MAPPING = np.sort(np.array([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72,
    458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115]))
MAX_LABEL_ID = 459

VOC_DIR = os.path.join("VOCdevkit", "VOC2010")
SPLITS = ("train", "val")

LAYOUT = ("{root}/VOCdevkit/VOC2010/{{JPEGImages,ImageSets/Main}} "
          "(VOCtrainval_03-May-2010.tar) and {root}/trainval/<id>.mat (PASCAL-Context "
          "trainval.tar.gz)")


def label_lut(num_classes: int) -> np.ndarray:
  """459-class id (0..459) -> class: MAPPING's ids -> 0..59, the rest -> 0 (background); for
  59 classes then mmseg's reduce_zero_label (0 -> 255, k -> k - 1)."""
  lut = np.zeros(MAX_LABEL_ID + 1, np.uint8)
  lut[MAPPING] = np.arange(len(MAPPING))
  if num_classes == 59:
    lut = np.where(lut == 0, base.IGNORE_INDEX, lut - 1).astype(np.uint8)
  return lut


def read_label_map(path: str) -> np.ndarray:
  """LabelMap of a PASCAL-Context trainval/*.mat: (H, W) ids 0..459."""
  import scipy.io  # here, not at the top: importing it costs ~0.4 s and most runs never do

  try:
    data = scipy.io.loadmat(path, variable_names=["LabelMap"])
  except FileNotFoundError:
    raise DataError(f"{path}: PASCAL-Context annotation file not found") from None
  except Exception as e:  # noqa: BLE001  (scipy raises several types for damaged files)
    raise DataError(f"{path}: cannot read PASCAL-Context annotation "
                    f"({type(e).__name__}: {e})") from None
  if "LabelMap" not in data:
    raise DataError(f"{path}: no LabelMap; is this a PASCAL-Context trainval/*.mat?")
  labels = np.asarray(data["LabelMap"])
  if labels.ndim != 2 or labels.size == 0:
    raise DataError(f"{path}: LabelMap must be a 2-D map, got shape {labels.shape}")
  if labels.min() < 0 or labels.max() > MAX_LABEL_ID:
    raise DataError(f"{path}: LabelMap values {labels.min()}..{labels.max()} outside "
                    f"0..{MAX_LABEL_ID} (the release's 459 classes)")
  return labels.astype(np.int64)


class PascalContext(base.PairedFiles):
  """PASCAL-Context with 60 (background included) or 59 classes."""

  def __init__(self, root: str, split: str, num_classes: int):
    if split not in SPLITS:
      raise ConfigError(f"pascal_context_{num_classes} has no split {split!r}; its splits: "
                        f"{', '.join(SPLITS)}")
    self.class_names, self.palette = {60: (CLASS_NAMES_60, PALETTE_60),
                                       59: (CLASS_NAMES_59, PALETTE_59)}[num_classes]
    layout = LAYOUT.format(root=root)
    voc = os.path.join(root, VOC_DIR)
    image_dir = os.path.join(voc, "JPEGImages")
    mat_dir = os.path.join(root, "trainval")
    if not os.path.isdir(mat_dir) and os.path.isdir(os.path.join(voc, "trainval")):
      mat_dir = os.path.join(voc, "trainval")
    for d in (image_dir, mat_dir):
      if not os.path.isdir(d):
        raise DataError(f"PASCAL-Context not found: {d} does not exist. Expected {layout}; "
                        "point to it with --config.data.root=...")
    ids = base.read_split_list("PASCAL-Context",
                               os.path.join(voc, "ImageSets", "Main", split + ".txt"), layout)
    images = [os.path.join(image_dir, i + ".jpg") for i in ids]
    masks = [os.path.join(mat_dir, i + ".mat") for i in ids]
    present_images, mats = set(os.listdir(image_dir)), set(os.listdir(mat_dir))
    for i, image, mask in zip(ids, images, masks):
      if i + ".jpg" not in present_images:
        raise DataError(f"PASCAL-Context: {image} missing; expected {layout}")
      if i + ".mat" not in mats:
        raise DataError(f"PASCAL-Context: {mask} missing (the labels of {image})")
    super().__init__(images, masks, label_lut(num_classes))

  def read_label(self, path):
    return read_label_map(path)


DATASETS.register("pascal_context_60", base.DatasetSpec(
    open=lambda data_cfg, split: PascalContext(data_cfg.root, split, 60),
    class_names=CLASS_NAMES_60, palette=PALETTE_60))
DATASETS.register("pascal_context_59", base.DatasetSpec(
    open=lambda data_cfg, split: PascalContext(data_cfg.root, split, 59),
    class_names=CLASS_NAMES_59, palette=PALETTE_59))
