"""UNet++ (Zhou et al., DLMIA 2018) with deep supervision, trained the paper's way on a folder
of images and label PNGs (segjax/data/folder.py: {root}/images/{split}/*, {root}/masks/{split}/*).

  python -m segjax.main --config=configs/unet_plusplus_folder.py --workdir=runs/unetpp \
      --config.data.root=/path/to/folder --config.data.class_names="('background', 'nuclei')"

Evaluate a pruned network (UNet++ L1..L3, "fast mode") from the same checkpoint with
`--mode=evaluate --config.model.prune_level=2`, or the averaged heads ("accurate mode") with
`--config.model.average_heads=True`.

The model is the official Keras `UNetPlusPlus` (github.com/MrGiovanni/UNetPlusPlus,
keras/helper_functions.py): widths (32, 64, 128, 256, 512), per-node 2x2 up-convolutions, conv
blocks of two 3x3 "same" convolutions with ReLU and dropout 0.5 each, He-normal kernels, four
1x1 heads on X^{0,1..4}; 9,041,601 parameters with one input channel and one class (the code's
own count; 9,042,408 here with RGB input, two classes and the four heads). Training as the
paper (Sec. 3): Adam, lr 3e-4, each head supervised by 0.5 * cross-entropy + Dice (the code's
`bce_dice_loss` = 0.5 BCE - dice, the same up to a constant), the four head losses summed.

Departures from the paper / official code:
  * classes are a K-way softmax (K = 2 for foreground/background: its cross-entropy is the
    code's sigmoid BCE of the logit difference) and the Dice term is segjax's `dice`
    (mmseg's DiceLoss: naive form with eps 1 = the code's smooth 1, sigmoid of every class
    channel, per image, averaged over the batch) where the code's dice is its single
    foreground channel pooled over the whole batch;
  * no L2 kernel regulariser (the code's l2(1e-4), a coupled penalty segjax's Adam lacks);
    Adam's eps is Keras' 1e-7; the learning rate stays constant (poly_power 0);
  * the paper stops early on the validation loss; segjax trains a fixed 20k steps (untuned)
    and keeps the checkpoint of best mIoU;
  * crops of 256x256 and batch 16 are segjax's choice (the paper's datasets range from 96x96
    nuclei patches to 512x512 CT slices; the official scripts use the largest batch that fits
    the GPU); augmentation is flips only.

Target: not reproduced in segjax. The paper reports, for UNet++ with deep supervision, an
average IoU gain of 3.9 points over U-Net across its four datasets (nuclei, colon polyp,
liver, lung nodule; abstract of arXiv:1807.10165).
"""
import ml_collections

from configs import common


def get_config():
  c = common.base_config()
  c.data.name = "folder"
  c.data.root = "data/folder"
  c.data.num_classes = 2
  c.data.class_names = ("background", "foreground")
  c.data.base_size = (256, 256)  # eval: images resized to fit 256x256
  c.data.ratio_range = (0.0, 0.0)  # no random rescaling (transforms.train_augment)
  c.data.crop_size = (256, 256)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  c.data.mean = (0.0, 0.0, 0.0)  # the code feeds images in [0, 1]
  c.data.std = (255.0, 255.0, 255.0)
  c.model = ml_collections.ConfigDict({
      "name": "unet_plusplus", "dtype": "float32", "widths": (32, 64, 128, 256, 512),
      "deep_supervision": True, "prune_level": None, "average_heads": False,
      "norm": False, "dropout": 0.5, "pad_mode": "reflect",
      "loss": ({"name": "cross_entropy", "weight": 0.5},
               {"name": "dice", "weight": 1.0, "naive_dice": True, "eps": 1.0})})
  c.optim.name = "adamw"
  c.optim.lr = 3e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-7
  c.optim.weight_decay = 0.0
  c.optim.no_decay = ()
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.0  # constant learning rate
  c.optim.end_lr = 0.0
  c.train.batch_size = 16
  c.train.num_steps = 20_000
  c.train.log_every = 50
  c.train.eval_every = 2_000
  c.train.checkpoint_every = 2_000
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c
