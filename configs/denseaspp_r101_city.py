"""DenseASPP (Yang et al., CVPR 2018) on a dilated ResNet-101, Cityscapes.

DEPARTURE from the paper: the official encoder is a dilated DenseNet-161 (DenseASPP161:
github.com/DeepMotionAIResearch/DenseASPP cfgs/DenseASPP161.py, models/DenseASPP.py); segjax
has no DenseNet, so this head sits on torchvision's ResNet-101 (V1b) at output stride 8
(stages 3 / 4 dilated 2 / 4 in every block, as DenseNet-161's blocks 3 / 4 there), whose
2048-channel map replaces DenseNet's 1104-channel one. The head itself is the official one
with DenseASPP161's widths (segjax/models/heads/denseaspp_head.py: rates 3 / 6 / 12 / 18 /
24, 512-channel bottlenecks, 128 channels per branch, dropout 0.1; parameter count tested).

Schedule: the paper's Sec. 4 as recalled when this file was written, NOT checked against the
text (the official repository ships no training code): Adam, lr 3e-4, weight decay 1e-5, poly
0.9, batch 8, 80 epochs of the 2975 training frames (30k steps), 512x512 crops of frames
randomly scaled by 0.5-2, horizontal flips; whole-image test.
Departures: segjax's adamw decays weights decoupled (torch's Adam adds the decay to the
gradient); ImageNet mean/std normalisation for torchvision's weights.

Target: none for this ResNet-101 variant; the official DenseNet-161 model reaches 79.9 mIoU on
Cityscapes val single-scale (80.6 multi-scale; the official README).

  python -m segjax.convert --format=torchvision_resnet --input=resnet101-63fe2227.pth \\
      --output=weights/r101_tv --config=configs/denseaspp_r101_city.py
  python -m segjax.main --config=configs/denseaspp_r101_city.py --workdir=runs/denseaspp \\
      --config.data.root=data/cityscapes --config.init_from=weights/r101_tv
"""
import ml_collections

from configs import common


def get_config():
  model = ml_collections.ConfigDict({
      "name": "denseaspp", "dtype": "float32",
      "backbone": common.dilated_resnet(101, 8, name="resnet101_v1b", contract_dilation=False),
      "decode_head": {"name": "denseaspp_head", "channels": 512, "branch_channels": 128,
                      "dilations": (3, 6, 12, 18, 24), "branch_dropout": 0.1,
                      "dropout": 0.1}})
  c = common.cityscapes_config(crop_size=(512, 512))
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  c.train.batch_size = 8
  c = common.cnn_recipe(c, model, num_steps=30_000)
  c.optim.name = "adamw"
  c.optim.lr = 3e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 1e-5
  c.optim.end_lr = 0.0
  return c
