"""Cityscapes (Cordts et al. 2016) from its official on-disk layout.

  {root}/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
  {root}/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png

labelIds are mapped to the 19 evaluation trainIds with the official table
(cityscapesScripts/helpers/labels.py); every other id becomes 255 (ignored).
"""
import os

import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS
from segjax.errors import DataError

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
          "{root}/gtFine/{split}/<city>/<name>_gtFine_labelIds.png")


def label_lut() -> np.ndarray:
  lut = np.full(256, base.IGNORE_INDEX, np.uint8)
  for label_id, train_id in LABEL_TO_TRAIN.items():
    lut[label_id] = train_id
  return lut


class Cityscapes(base.Source):
  class_names = CLASS_NAMES
  palette = PALETTE

  def __init__(self, root: str, split: str):
    image_dir = os.path.join(root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
      raise DataError(
          f"Cityscapes not found: {image_dir} does not exist. Expected "
          f"{LAYOUT.format(root=root, split=split)}; point to it with --config.data.root=...")
    self.images = base.sorted_files(image_dir, "_leftImg8bit.png")
    if not self.images:
      raise DataError(f"Cityscapes: no *_leftImg8bit.png under {image_dir}; expected "
                      f"{LAYOUT.format(root=root, split=split)}")
    self.masks = []
    for path in self.images:
      rel = os.path.relpath(path, image_dir)
      mask = os.path.join(root, "gtFine", split, rel.replace("_leftImg8bit.png",
                                                             "_gtFine_labelIds.png"))
      if not os.path.isfile(mask):
        raise DataError(f"Cityscapes: {mask} missing (the label map of {path})")
      self.masks.append(mask)
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
                      "a *_gtFine_labelIds.png (not color or instanceIds)?")
    mask = self._lut[label_ids]
    base.check_pair(image, mask, len(CLASS_NAMES), self.images[index], self.masks[index])
    return image, mask


DATASETS.register("cityscapes", base.DatasetSpec(
    open=lambda data_cfg, split: Cityscapes(data_cfg.root, split),
    class_names=CLASS_NAMES, palette=PALETTE))
