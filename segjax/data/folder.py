"""A plain folder of images and label PNGs paired by relative path and file stem.

  {root}/images/{split}/**/<stem>.{jpg,jpeg,png,bmp}
  {root}/masks/{split}/**/<stem>.png      (one uint8 class id per pixel, 255 = ignore)

Class names come from the config (data.class_names).
"""
import os

from segjax.data import base
from segjax.data.registry import DATASETS
from segjax.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class Folder(base.PairedFiles):

  def __init__(self, root: str, split: str, class_names):
    if not class_names:
      raise DataError("data.class_names must list the classes of a folder dataset")
    self.class_names = tuple(class_names)
    self.palette = base.default_palette(len(self.class_names))
    image_dir = os.path.join(root, "images", split)
    mask_dir = os.path.join(root, "masks", split)
    for d in (image_dir, mask_dir):
      if not os.path.isdir(d):
        raise DataError(f"folder dataset: {d} does not exist. Expected {root}/images/{split}/ and "
                        f"{root}/masks/{split}/ paired by file stem; set --config.data.root=...")
    images, masks = [], []
    for dirpath, _, files in sorted(os.walk(image_dir)):
      for f in sorted(files):
        if os.path.splitext(f)[1].lower() not in IMAGE_SUFFIXES:
          continue
        rel = os.path.relpath(os.path.join(dirpath, f), image_dir)
        mask = os.path.join(mask_dir, os.path.splitext(rel)[0] + ".png")
        if not os.path.isfile(mask):
          image = os.path.join(dirpath, f)
          raise DataError(f"folder dataset: {mask} missing (the mask of {image})")
        images.append(os.path.join(dirpath, f))
        masks.append(mask)
    if not images:
      raise DataError(f"folder dataset: no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    super().__init__(images, masks)


DATASETS.register("folder", base.DatasetSpec(
    open=lambda data_cfg, split: Folder(data_cfg.root, split, data_cfg.class_names)))
