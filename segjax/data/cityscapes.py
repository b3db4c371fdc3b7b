"""Cityscapes (Cordts et al. 2016) from its official on-disk layout.

  {root}/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png      leftImg8bit_trainvaltest.zip
  {root}/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       gtFine_trainvaltest.zip
  {root}/leftImg8bit/train_extra/{city}/...                     leftImg8bit_trainextra.zip
  {root}/gtCoarse/{split}/{city}/{stem}_gtCoarse_labelIds.png   gtCoarse.zip (train,
                                                                train_extra, val)

labelIds are mapped to the 19 evaluation trainIds with the official table
(cityscapesScripts/helpers/labels.py); every other id becomes 255 (ignored).

The coarse annotations are read the way mmseg reads them (a CityscapesDataset whose
seg_map_path is gtCoarse/<split>, from the labels its converter renders with
`--gt-dir gtCoarse`): the split names the annotation.
  "train", "val", "test"  fine labels (gtFine)
  "train_extra"           the 19,998 extra images, whose only labels are coarse (gtCoarse)
  "gtCoarse/train", ...   a fine split's images with their coarse labels
  "train+train_extra"     several splits in order, e.g. the fine + coarse training set
"""
import os
from typing import List, Tuple

import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS
from segjax.errors import ConfigError, DataError

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
               "truck", "bus", "train", "motorcycle", "bicycle")

PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)

# labelId -> trainId for the ids 0..33 that occur in *_labelIds.png.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
MAX_LABEL_ID = 33

LAYOUT = ("{root}/leftImg8bit/{split}/<city>/<name>_leftImg8bit.png and "
          "{root}/{gt}/{split}/<city>/<name>_{gt}_labelIds.png")

ANNOTATIONS = ("gtFine", "gtCoarse")
COARSE_ONLY_SPLITS = ("train_extra",)  # splits that have no fine annotation


def parse_split(split: str) -> List[Tuple[str, str]]:
  """"train+gtCoarse/val" -> [("gtFine", "train"), ("gtCoarse", "val")]: the annotation and
  the split of each part; a part without annotation is fine unless only coarse exists."""
  parts = []
  for part in split.split("+"):
    gt, _, name = part.rpartition("/")
    gt = gt or ("gtCoarse" if name in COARSE_ONLY_SPLITS else "gtFine")
    if gt not in ANNOTATIONS or not name:
      raise ConfigError(f"cityscapes split {split!r}: {part!r} is not <split> or "
                        f"<{'|'.join(ANNOTATIONS)}>/<split>")
    if gt == "gtFine" and name in COARSE_ONLY_SPLITS:
      raise ConfigError(f"cityscapes split {split!r}: {name} has coarse labels only (gtCoarse)")
    parts.append((gt, name))
  return parts


def label_lut() -> np.ndarray:
  lut = np.full(256, base.IGNORE_INDEX, np.uint8)
  for label_id, train_id in LABEL_TO_TRAIN.items():
    lut[label_id] = train_id
  return lut


class Cityscapes(base.Source):
  class_names = CLASS_NAMES
  palette = PALETTE

  def __init__(self, root: str, split: str):
    self.images, self.masks = [], []
    for gt, name in parse_split(split):
      images, masks = _list_split(root, gt, name)
      self.images += images
      self.masks += masks
    self._lut = label_lut()

  def __len__(self):
    return len(self.images)

  def name(self, index):
    return os.path.basename(self.images[index]).replace("_leftImg8bit.png", "")

  def size(self, index):
    return base.image_size(self.images[index])

  def load(self, index):
    image = base.read_image(self.images[index])
    label_ids = base.read_mask(self.masks[index])
    if label_ids.max(initial=0) > MAX_LABEL_ID:
      raise DataError(f"{self.masks[index]}: labelId {label_ids.max()} > {MAX_LABEL_ID}; is this "
                      "a *_labelIds.png (not color or instanceIds)?")
    mask = self._lut[label_ids]
    base.check_pair(image, mask, len(CLASS_NAMES), self.images[index], self.masks[index])
    return image, mask


def _list_split(root: str, gt: str, split: str) -> Tuple[List[str], List[str]]:
  """Image paths of one split and the label paths of annotation `gt` ("gtFine"/"gtCoarse")."""
  layout = LAYOUT.format(root=root, split=split, gt=gt)
  image_dir = os.path.join(root, "leftImg8bit", split)
  if not os.path.isdir(image_dir):
    raise DataError(
        f"Cityscapes not found: {image_dir} does not exist. Expected {layout}; point to it "
        "with --config.data.root=...")
  images = base.sorted_files(image_dir, "_leftImg8bit.png")
  if not images:
    raise DataError(f"Cityscapes: no *_leftImg8bit.png under {image_dir}; expected {layout}")
  masks = []
  for path in images:
    rel = os.path.relpath(path, image_dir)
    mask = os.path.join(root, gt, split, rel.replace("_leftImg8bit.png", f"_{gt}_labelIds.png"))
    if not os.path.isfile(mask):
      raise DataError(f"Cityscapes: {mask} missing (the label map of {path})")
    masks.append(mask)
  return images, masks


DATASETS.register("cityscapes", base.DatasetSpec(
    open=lambda data_cfg, split: Cityscapes(data_cfg.root, split),
    class_names=CLASS_NAMES, palette=PALETTE))
