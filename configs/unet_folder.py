"""U-Net (Ronneberger et al., MICCAI 2015) trained the paper's way on a folder of images and
label PNGs (segjax/data/folder.py: {root}/images/{split}/*.png|jpg, {root}/masks/{split}/*.png).

  python -m segjax.main --config=configs/unet_folder.py --workdir=runs/unet \
      --config.data.root=/path/to/folder --config.data.class_names="('membrane', 'cell')"

The model is Fig. 1's: widths 64..1024, unpadded 3x3 convolutions, centre-cropped copies,
dropout 0.5 at the end of the contracting path, Gaussian sqrt(2 / fan-in) initialisation,
31.03M parameters; every input is mirror-padded by 92 pixels per side (more at the bottom and
right up to the next valid tile) so the valid output covers it exactly (overlap-tile, Fig. 2;
see segjax/models/unet.py). Training as Sec. 3: large tiles rather than large batches (whole
512x512 images, e.g. the ISBI 2012 EM slices, batch 1 on one device: a 700x700 mirrored
input tile per step), SGD with momentum 0.99, pixel-wise softmax cross-entropy; evaluation on
whole images. Inputs are scaled to [-1, 1] (mean = std = 127.5; the paper does not say).

Departures from the paper:
  * no weight map w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / 2 sigma^2) (w0 = 10, sigma = 5): d1, d2
    are distances to the two nearest cells, which needs instance labels (unet.py says why);
    plain cross-entropy instead;
  * augmentation is segjax's: horizontal flips and photometric distortion, no random rescaling
    (data.ratio_range = (0, 0)); the paper's shifts, rotations, elastic deformations (random
    3x3 grid displacements, sigma 10 px, bicubic) and gray-value variations are not in segjax;
  * tiles are random crops of data.crop_size mirrored at the crop's border, where the paper's
    training tiles carried the true image context around the labelled centre; identical for
    images no larger than the crop (the ISBI slices at 512x512);
  * the paper gives no learning rate, schedule or length: lr 1e-3 kept constant
    (poly_power 0) for 20k steps, no weight decay, is segjax's untuned choice.

Target: not reproduced in segjax. The paper's numbers are not IoUs of a semantic map: on the
ISBI 2012 EM challenge (Table 1) warping error 0.000353, Rand error 0.0382, pixel error
0.0611 (segjax computes none of these); on the ISBI 2015 cell tracking sets (Table 2) IoU
0.9203 (PhC-U373) and 0.7756 (DIC-HeLa), per-cell-segmentation IoUs of the challenge.
"""
import ml_collections

from configs import common


def get_config():
  c = common.base_config()
  c.data.name = "folder"
  c.data.root = "data/folder"
  c.data.num_classes = 2
  c.data.class_names = ("background", "foreground")
  c.data.base_size = (512, 512)  # eval: images resized to fit 512x512 (ISBI: unchanged)
  c.data.ratio_range = (0.0, 0.0)  # no random rescaling (transforms.train_augment)
  c.data.crop_size = (512, 512)
  c.data.cat_max_ratio = 1.0
  c.data.mean = (127.5, 127.5, 127.5)
  c.data.std = (127.5, 127.5, 127.5)
  c.model = ml_collections.ConfigDict({
      "name": "unet", "dtype": "float32", "widths": (64, 128, 256, 512, 1024),
      "padding": "valid", "norm": False, "dropout": 0.5, "pad_mode": "reflect",
      "loss": ({"name": "cross_entropy", "avg_non_ignore": True},)})
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.99
  c.optim.weight_decay = 0.0
  c.optim.no_decay = ()
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.0  # constant learning rate
  c.optim.end_lr = 0.0
  c.train.batch_size = 1
  c.train.num_steps = 20_000
  c.train.log_every = 50
  c.train.eval_every = 2_000
  c.train.checkpoint_every = 2_000
  c.eval.batch_size = 1
  c.eval.mode = "whole"
  return c
