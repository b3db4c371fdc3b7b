"""SegNet (Badrinarayanan et al., TPAMI 2017) with its VGG-16-BN encoder on Cityscapes.

The paper's recipe, on Cityscapes because segjax has no CamVid reader (CamVid's 360x480
frames are its 720x960 video halved; here Cityscapes' 1024x2048 frames are halved likewise,
to 512x1024, and trained whole, as the paper trains on whole frames):
  * SGD with a fixed learning rate of 0.1 and momentum 0.9 (the paper), mini-batches of 12
    images (the paper), 40k steps (the official solver's max_iter, Models/segnet_solver.prototxt
    in github.com/alexgkendall/SegNet-Tutorial); weight decay 5e-4 on the weights and BN
    scales but not on biases and BN shifts (that solver and the decay_mult of
    Models/segnet_train.prototxt).
  * Cross-entropy with median frequency balancing (Eigen and Fergus 2015): class c weighs
    median(f) / f_c, f_c = pixels of class c / pixels of the training images that contain c,
    computed from the training labels under the root given after the colon (reading all 2,975
    label maps once when the config loads, a minute or two). Without it the loss is
    unweighted: the weights need the data, and no published Cityscapes table was verified.
  * Horizontal flips; no scale or photometric augmentation. Whole-frame test at 512x1024,
    scored at 1024x2048.
  * Encoder from ImageNet VGG-16 (the paper): torchvision's vgg16_bn through segjax.convert's
    torchvision_vgg format into params/backbone/ (conv1_1 .. conv5_3); the decoder starts
    from scratch.
The official solver uses lr 0.001 with batch 4 instead; the paper's 0.1 is kept here.

  python -m segjax.main --config=configs/segnet_vgg16_city.py:data/cityscapes \\
      --workdir=runs/segnet_city --config.init_from=/path/to/converted/vgg16_bn

Target: none reproduced in segjax. The paper reports CamVid (11 classes) only; on Cityscapes
this recipe is an adaptation, not a paper number.
"""
from typing import Optional, Sequence, Tuple

import ml_collections
import numpy as np

from configs import common

VGG16_WIDTHS = (64, 128, 256, 512, 512)


def median_frequency_weights(class_pixels: Sequence[int], image_pixels: Sequence[int]
                             ) -> Tuple[float, ...]:
  """Median frequency balancing: w_c = median(f) / f_c with f_c = class_pixels[c] /
  image_pixels[c] (the pixels of the images where c occurs). A class never seen weighs 0:
  it is never in a label, so its weight never counts."""
  class_pixels = np.asarray(class_pixels, np.float64)
  image_pixels = np.asarray(image_pixels, np.float64)
  seen = class_pixels > 0
  freq = np.where(seen, class_pixels / np.maximum(image_pixels, 1.0), 1.0)
  weights = np.where(seen, np.median(freq[seen]) / freq, 0.0)
  return tuple(float(w) for w in weights)


def class_pixel_counts(source, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
  """(pixels of each class, pixels of the images containing it) over a segjax Source."""
  class_pixels = np.zeros(num_classes, np.int64)
  image_pixels = np.zeros(num_classes, np.int64)
  for i in range(len(source)):
    _, mask = source.load(i)
    counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]
    class_pixels += counts
    image_pixels += (counts > 0) * mask.size
  return class_pixels, image_pixels


def segnet_model(widths=VGG16_WIDTHS, class_weight=None) -> ml_collections.ConfigDict:
  loss = {"name": "cross_entropy", "weight": 1.0}
  if class_weight is not None:
    loss["class_weight"] = tuple(class_weight)
  return ml_collections.ConfigDict({"name": "segnet", "dtype": "float32",
                                    "widths": tuple(widths), "loss": (loss,)})


def get_config(root: Optional[str] = None):
  c = common.cityscapes_config(crop_size=(512, 1024))
  c.data.base_size = (512, 1024)
  c.data.ratio_range = (1.0, 1.0)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  class_weight = None
  if root:
    from segjax import data as data_lib  # the data reader only when it is needed
    c.data.root = root
    source = data_lib.build_source(c.data, c.data.train_split)
    class_weight = median_frequency_weights(*class_pixel_counts(source, c.data.num_classes))
  c = common.cnn_recipe(c, segnet_model(class_weight=class_weight), num_steps=40_000)
  c.optim.lr = 0.1
  c.optim.end_lr = 0.1  # a fixed learning rate
  c.optim.no_decay = ("bias$",)  # conv biases and BN shifts (Caffe's decay_mult 0)
  c.train.batch_size = 12
  c.eval.crop_size = (512, 1024)
  c.eval.stride = (341, 683)
  return c
