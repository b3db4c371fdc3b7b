"""PASCAL VOC 2012 with the SBD extra annotations ("VOC aug"), the 21-class benchmark.

Two downloads, unpacked side by side in data.root:
  VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/):
    {root}/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    {root}/VOCdevkit/VOC2012/SegmentationClass/<id>.png   palette PNGs: 0..20, 255 = boundary
    {root}/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt   1,464 / 1,449 ids
  benchmark.tgz (SBD, Hariharan et al. 2011,
  http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/):
    {root}/benchmark_RELEASE/dataset/cls/<id>.mat    MATLAB struct GTcls, field Segmentation
    {root}/benchmark_RELEASE/dataset/{train,val}.txt   8,498 / 2,857 ids

Splits, as mmseg's pascal_voc12_aug config builds them with tools/dataset_converters/
voc_aug.py:
  "train"  10,582 images: VOC's train ids with VOC's PNG labels, then (sorted) the SBD train
           and val ids in neither VOC train nor VOC val, with SBD's labels: the config's
           ConcatDataset of ImageSets/Segmentation/train.txt over SegmentationClass and the
           converter's aug.txt (SBD ids minus VOC train and val) over SegmentationClassAug.
  "val"    VOC 2012 val, 1,449 images (SBD is not needed for it).
Every image is read from VOC2012/JPEGImages (it holds SBD's images too). The .mat files are
read with scipy.io.loadmat, as the converter reads them (GTcls[0]["Segmentation"][0]); 255
(VOC's object boundaries) is ignored. Class names and palette are mmseg 1.2.2's
PascalVOCDataset.
"""
import os

import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS
from segjax.errors import ConfigError, DataError

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")

PALETTE = np.array([
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128),
    (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0),
    (128, 192, 0), (0, 64, 128)], np.uint8)

VOC_DIR = os.path.join("VOCdevkit", "VOC2012")
SBD_DIR = os.path.join("benchmark_RELEASE", "dataset")
SPLITS = ("train", "val")

LAYOUT = ("{root}/VOCdevkit/VOC2012/{{JPEGImages,SegmentationClass,ImageSets/Segmentation}} "
          "(VOCtrainval_11-May-2012.tar) and {root}/benchmark_RELEASE/dataset/{{cls/*.mat,"
          "train.txt,val.txt}} (SBD's benchmark.tgz)")


def read_sbd_mask(path: str) -> np.ndarray:
  """GTcls.Segmentation of an SBD dataset/cls/*.mat as uint8 (H, W) class ids."""
  import scipy.io  # here, not at the top: importing it costs ~0.4 s and most runs never do

  try:
    data = scipy.io.loadmat(path)
  except FileNotFoundError:
    raise DataError(f"{path}: SBD annotation file not found") from None
  except Exception as e:  # noqa: BLE001  (scipy raises several types for damaged files)
    raise DataError(f"{path}: cannot read SBD annotation ({type(e).__name__}: {e})") from None
  try:
    mask = np.asarray(data["GTcls"][0]["Segmentation"][0])
  except (KeyError, IndexError, ValueError):
    raise DataError(f"{path}: no GTcls.Segmentation; is this an SBD dataset/cls/*.mat "
                    "(not inst/)?") from None
  if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
    raise DataError(f"{path}: GTcls.Segmentation must be a 2-D map of ids 0..255, got shape "
                    f"{mask.shape}")
  return mask.astype(np.uint8)


class VOCAug(base.PairedFiles):
  class_names = CLASS_NAMES
  palette = PALETTE

  def __init__(self, root: str, split: str):
    if split not in SPLITS:
      raise ConfigError(f"voc_aug has no split {split!r}; its splits: {', '.join(SPLITS)}")
    layout = LAYOUT.format(root=root)
    voc = os.path.join(root, VOC_DIR)
    image_dir = os.path.join(voc, "JPEGImages")
    png_dir = os.path.join(voc, "SegmentationClass")
    for d in (image_dir, png_dir):
      if not os.path.isdir(d):
        raise DataError(f"PASCAL VOC 2012 not found: {d} does not exist. Expected {layout}; "
                        "point to it with --config.data.root=...")
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    def read_ids(path):
      return base.read_split_list("PASCAL VOC aug", path, layout)

    voc_val = read_ids(os.path.join(lists, "val.txt"))
    if split == "val":
      masks = [(i, os.path.join(png_dir, i + ".png")) for i in voc_val]  # (id, label file)
    else:
      voc_train = read_ids(os.path.join(lists, "train.txt"))
      sbd = os.path.join(root, SBD_DIR)
      sbd_ids = read_ids(os.path.join(sbd, "train.txt")) + read_ids(os.path.join(sbd, "val.txt"))
      extra = sorted(set(sbd_ids) - set(voc_train) - set(voc_val))
      masks = ([(i, os.path.join(png_dir, i + ".png")) for i in voc_train] +
               [(i, os.path.join(sbd, "cls", i + ".mat")) for i in extra])
    super().__init__([os.path.join(image_dir, i + ".jpg") for i, _ in masks],
                     [m for _, m in masks])
    # A missing folder lists as empty, so the error names the first label file it should hold.
    listed = {d: set(os.listdir(d)) if os.path.isdir(d) else set()
              for d in {os.path.dirname(m) for m in self.masks}}
    for image, mask in zip(self.images, self.masks):
      if os.path.basename(mask) not in listed[os.path.dirname(mask)]:
        raise DataError(f"PASCAL VOC aug: {mask} missing (the labels of {image})")
    images = set(os.listdir(image_dir))
    for image in self.images:
      if os.path.basename(image) not in images:
        raise DataError(f"PASCAL VOC aug: {image} missing; expected {layout}")

  def read_label(self, path):
    """VOC's palette PNGs, or SBD's .mat for the images only SBD labels."""
    return read_sbd_mask(path) if path.endswith(".mat") else base.read_mask(path)


DATASETS.register("voc_aug", base.DatasetSpec(
    open=lambda data_cfg, split: VOCAug(data_cfg.root, split),
    class_names=CLASS_NAMES, palette=PALETTE))
