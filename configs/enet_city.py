"""ENet (Paszke et al. 2016) on Cityscapes, the paper's recipe (segjax/models/enet.py).

As the paper and the authors' Torch code (github.com/e-lab/ENet-training):
  * Whole frames downscaled to 512x1024 (the code's Cityscapes input resolution), no scale,
    crop, flip or photometric augmentation (the code has none).
  * Adam, lr 5e-4, weight decay 2e-4 as L2 added to the gradient (Torch's optim.adam, segjax's
    `adam`) on every parameter, batch 10. The code keeps the lr constant and multiplies it by
    1e-7 after 100 epochs (`lrDecayEvery`), which ends training in effect: 100 epochs of 2,975
    frames = 30k steps at a constant lr here.
  * Cross-entropy with the paper's class weights w = 1 / ln(1.02 + p_class), computed from the
    training labels under the root given after the colon (configs/common.py:
    train_label_histogram, log_class_weights; reading the 2,975 label maps once when the
    config loads). Without a root the loss is unweighted. The Torch code's 20th class,
    "Unlabeled", has weight 0; here those pixels are the ignore label (255), the same loss.
  * Test on the whole frame at 512x1024, scored at 1024x2048.
Departure: the paper trains the encoder alone first (a classifier on its 1/8 map against
downsampled labels), then the whole model; this config trains the whole model from scratch at
once.

  python -m segjax.main --config=configs/enet_city.py:data/cityscapes --workdir=runs/enet

Target: 58.3 class mIoU on the Cityscapes test set (the paper's Table 3), not a segjax
measurement.
"""
from typing import Optional

import ml_collections

from configs import common

CLASS_WEIGHT_C = 1.02  # w = 1 / ln(1.02 + p)


def get_config(root: Optional[str] = None):
  c = common.cityscapes_config(crop_size=(512, 1024))
  c.data.base_size = (512, 1024)
  c.data.ratio_range = (1.0, 1.0)
  c.data.cat_max_ratio = 1.0
  c.data.flip_prob = 0.0
  c.data.photometric = False
  loss = {"name": "cross_entropy", "weight": 1.0}
  if root:
    c.data.root = root
    loss["class_weight"] = common.log_class_weights(
        *common.train_label_histogram(c.data, c.data.num_classes), CLASS_WEIGHT_C)
  model = ml_collections.ConfigDict({"name": "enet", "dtype": "float32", "loss": (loss,)})
  c = common.cnn_recipe(c, model, num_steps=30_000)
  c.optim.name = "adam"
  c.optim.lr = 5e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 2e-4
  c.optim.poly_power = 0.0  # constant
  c.optim.end_lr = 0.0
  c.train.batch_size = 10
  c.eval.crop_size = (512, 1024)
  c.eval.stride = (341, 683)
  return c
