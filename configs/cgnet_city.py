"""CGNet (Wu et al. 2020) on Cityscapes 512x1024, 60k steps.

Mirrors mmseg 1.2.2 `configs/cgnet/cgnet_fcn_4xb8-60k_cityscapes-512x1024.py`: CGNet-M3N21
(stem 32, 3 CG blocks at 64 channels with dilation 2, 21 at 128 with dilation 4; global
context reductions 8 and 16; BatchNorm eps 1e-3, PReLU) and a 1x1 classifier on its 256-channel
1/8 map (FCNHead with no conv, no dropout), trained with class-weighted cross-entropy
(mmseg's Cityscapes weights below) from scratch. Images are only mean-subtracted (the
config's mean, std 1). Global batch 32 (4 GPUs x 8), Adam lr 1e-3 (eps 1e-8, coupled L2
weight decay 5e-4 on every parameter, torch's Adam), poly 0.9 to 1e-4, evaluation and
checkpoints every 4k steps; whole-image test at 1024x2048. 0.50M parameters. Reference mIoU
68.27 single-scale (mmseg's model zoo figure; the paper reports 64.8 on the test set), not a
segjax measurement.

  python -m segjax.main --config=configs/cgnet_city.py --workdir=runs/cgnet \\
      --config.data.root=data/cityscapes
"""
from configs import common

# mmseg's configs/_base_/models/cgnet.py loss_decode class_weight (Cityscapes train ids).
CLASS_WEIGHT = (2.5959933, 6.7415504, 3.5354059, 9.8663225, 9.690899, 9.369352, 10.289121,
                9.953208, 4.3097677, 9.490387, 7.674431, 9.396905, 10.347791, 6.3927646,
                10.226669, 10.241062, 10.280587, 10.396974, 10.055647)


def get_config():
  c = common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "cgnet", "num_channels": (32, 64, 128), "num_blocks": (3, 21),
                "dilations": (2, 4), "reductions": (8, 16)},
      decode_head={"name": "fcn_head", "in_index": 2, "channels": 256, "num_convs": 0,
                   "concat_input": False, "dropout": 0.0,
                   "loss": ({"name": "cross_entropy", "class_weight": CLASS_WEIGHT,
                             "avg_non_ignore": False},)}), num_steps=60_000)
  c.data.mean = (72.39239876, 82.90891754, 73.15835921)
  c.data.std = (1.0, 1.0, 1.0)
  c.train.batch_size = 32
  c.train.eval_every = c.train.checkpoint_every = 4_000
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 5e-4
  return c
