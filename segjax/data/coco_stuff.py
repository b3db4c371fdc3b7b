"""COCO-Stuff 164k (Caesar et al. 2018): COCO 2017's images with 171 thing and stuff classes.

Downloads, unzipped as the COCO-Stuff README does (https://github.com/nightrome/cocostuff):
train2017.zip and val2017.zip (http://images.cocodataset.org/zips/) into {root}/images/,
stuffthingmaps_trainval2017.zip into {root}/annotations/:

  {root}/images/train2017/<12 digits>.jpg                 118,287 images   split "train"
  {root}/images/val2017/<12 digits>.jpg                     5,000 images   split "val"
  {root}/annotations/{train2017,val2017}/<same stem>.png   label maps, 0..181 and 255

The label maps number things 0..90 (COCO category id - 1) and stuff 91..181, with 11 thing
ids COCO never used; 255 is unlabelled. They are mapped to mmseg's 171 contiguous classes with
tools/dataset_converters/coco_stuff164k.py's clsID_to_trID: the used ids in order, i.e. every
id of 0..181 but UNUSED_IDS; those (absent from the release) and 255 become 255. A value above
181 cannot come from the release and is refused by base.check_pair (mmseg's converter would
pass it through unchanged). *_labelTrainIds.png files that mmseg's converter wrote beside the
maps are not read: images are paired with <stem>.png. Class names and palette are mmseg
1.2.2's COCOStuffDataset.
"""
import os

import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS
from segjax.errors import ConfigError

CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
    "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood")

PALETTE = np.array([
    (0, 192, 64), (0, 192, 64), (0, 64, 96), (128, 192, 192), (0, 64, 64), (0, 192, 224),
    (0, 192, 192), (128, 192, 64), (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224),
    (0, 0, 64), (0, 160, 192), (128, 0, 96), (128, 0, 192), (0, 32, 192), (128, 128, 224),
    (0, 0, 192), (128, 160, 192), (128, 128, 0), (128, 0, 32), (128, 32, 0), (128, 0, 128),
    (64, 128, 32), (0, 160, 0), (0, 0, 0), (192, 128, 160), (0, 32, 0), (0, 128, 128),
    (64, 128, 160), (128, 160, 0), (0, 128, 0), (192, 128, 32), (128, 96, 128), (0, 0, 128),
    (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160), (0, 96, 128), (128, 128, 128),
    (64, 0, 160), (128, 224, 128), (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192),
    (0, 128, 32), (64, 224, 0), (0, 0, 64), (128, 128, 160), (64, 96, 0), (0, 128, 192),
    (0, 128, 160), (192, 224, 0), (0, 128, 64), (128, 128, 32), (192, 32, 128), (0, 64, 192),
    (0, 0, 32), (64, 160, 128), (128, 64, 64), (128, 0, 160), (64, 32, 128), (128, 192, 192),
    (0, 0, 160), (192, 160, 128), (128, 192, 0), (128, 0, 96), (192, 32, 0), (128, 64, 128),
    (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224), (64, 32, 0), (0, 192, 128),
    (64, 128, 224), (192, 160, 0), (0, 192, 0), (192, 128, 96), (192, 96, 128), (0, 64, 128),
    (64, 0, 96), (64, 224, 128), (128, 64, 0), (192, 0, 224), (64, 96, 128), (128, 192, 128),
    (64, 0, 224), (192, 224, 128), (128, 192, 64), (192, 0, 96), (192, 96, 0), (128, 64, 192),
    (0, 128, 96), (0, 224, 0), (64, 64, 64), (128, 128, 224), (0, 96, 0), (64, 192, 192),
    (0, 128, 224), (128, 224, 0), (64, 192, 64), (128, 128, 96), (128, 32, 128), (64, 0, 192),
    (0, 64, 96), (0, 160, 128), (192, 0, 64), (128, 64, 224), (0, 32, 128), (192, 128, 192),
    (0, 64, 224), (128, 160, 128), (192, 128, 0), (128, 64, 32), (128, 32, 64), (192, 0, 128),
    (64, 192, 32), (0, 160, 64), (64, 0, 0), (192, 192, 160), (0, 32, 64), (64, 128, 128),
    (64, 192, 160), (128, 160, 64), (64, 128, 0), (192, 192, 32), (128, 96, 192), (64, 0, 128),
    (64, 64, 32), (0, 224, 192), (192, 0, 0), (192, 64, 160), (0, 96, 192), (192, 128, 128),
    (64, 64, 160), (128, 224, 192), (192, 128, 64), (192, 64, 32), (128, 96, 64), (192, 0, 192),
    (0, 192, 32), (64, 224, 64), (64, 0, 64), (128, 192, 160), (64, 96, 64), (64, 128, 192),
    (0, 192, 160), (192, 224, 64), (64, 128, 64), (128, 192, 32), (192, 32, 192), (64, 64, 192),
    (0, 64, 32), (64, 160, 192), (192, 64, 64), (128, 64, 160), (64, 32, 192), (192, 192, 192),
    (0, 64, 160), (192, 160, 192), (192, 192, 0), (128, 64, 96), (192, 32, 64), (192, 64, 128),
    (64, 192, 96), (64, 160, 64), (64, 64, 0)], np.uint8)

# Thing ids of the 0..181 label maps that no COCO category uses (COCO ids 12, 26, 29, 30, 45,
# 66, 68, 69, 71, 83, 91, minus one): the ids clsID_to_trID leaves out.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
MAX_LABEL_ID = 181

SPLIT_DIRS = {"train": "train2017", "val": "val2017"}

LAYOUT = ("{root}/images/{dir}/<name>.jpg (train2017.zip / val2017.zip) and "
          "{root}/annotations/{dir}/<name>.png (stuffthingmaps_trainval2017.zip)")


def label_lut() -> np.ndarray:
  """clsID_to_trID as a lookup table: used ids of 0..181 -> 0..170 in order, unused ids and
  255 -> 255; 182..254 keep their value, so base.check_pair refuses them."""
  lut = np.arange(256).astype(np.uint8)
  lut[list(UNUSED_IDS) + [base.IGNORE_INDEX]] = base.IGNORE_INDEX
  used = [i for i in range(MAX_LABEL_ID + 1) if i not in UNUSED_IDS]
  lut[used] = np.arange(len(used))
  return lut


class COCOStuff164k(base.PairedFiles):
  class_names = CLASS_NAMES
  palette = PALETTE

  def __init__(self, root: str, split: str):
    if split not in SPLIT_DIRS:
      raise ConfigError(f"coco_stuff164k has no split {split!r}; its splits: "
                        f"{', '.join(SPLIT_DIRS)}")
    images, masks = base.pair_by_stem(
        "COCO-Stuff 164k", os.path.join(root, "images", SPLIT_DIRS[split]),
        os.path.join(root, "annotations", SPLIT_DIRS[split]),
        LAYOUT.format(root=root, dir=SPLIT_DIRS[split]))
    super().__init__(images, masks, label_lut())


DATASETS.register("coco_stuff164k", base.DatasetSpec(
    open=lambda data_cfg, split: COCOStuff164k(data_cfg.root, split),
    class_names=CLASS_NAMES, palette=PALETTE))
