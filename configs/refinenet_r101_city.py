"""RefineNet (Lin et al., CVPR 2017), 4-cascaded on ResNet-101, Cityscapes: the recipe as far
as the paper and the official code (github.com/guosheng/refinenet main/demo_refinenet_train.m,
gen_net_opts_model_type1.m) state it.

Model (segjax/models/heads/refinenet_head.py): an undilated ResNet-101 (four stages at 1/4 ..
1/32, BatchNorm statistics frozen as the official code's "fixed" moments), RefineNet-4..1
(512 channels on stage 4, 256 on the others; two adaptive RCUs, CRP with four pooling
blocks, three output RCUs each), dropout 0.5 and a 3x3 classifier at 1/4. Schedule: SGD lr
5e-4 for the RefineNet blocks and the classifier, 5e-5 for the ResNet (the code's
input_featnet_lr_multiplier 0.1), momentum 0.9, weight decay 5e-4; crops of 400x400 (the
code's crop_box_size) from frames randomly scaled by 0.7-1.3 (its aug_scales), flips.

Target: 73.6 mIoU on the Cityscapes test set (the paper, ResNet-101, fine annotations only;
the paper reports no val figure). Departures: the code trains one image per step for 600
"epochs" of 1000-2000 class-balanced crops with a learning rate lowered by hand and feeds the
network the image upscaled by 1.2; segjax trains 80k steps of batch 8 (640k crops, random
crop positions) with poly 0.9 decay, at the data scale; the official ResNet is MatConvNet's
(stride in the 1x1 conv, Caffe-style mean), segjax's torchvision's V1b with ImageNet
mean/std; single-scale whole-image test (the official demos fuse several scales).

  python -m segjax.convert --format=torchvision_resnet --input=resnet101-63fe2227.pth \\
      --output=weights/r101_tv --config=configs/refinenet_r101_city.py
  python -m segjax.main --config=configs/refinenet_r101_city.py --workdir=runs/refinenet \\
      --config.data.root=data/cityscapes --config.init_from=weights/r101_tv
"""
import ml_collections

from configs import common


def get_config():
  model = ml_collections.ConfigDict({
      "name": "refinenet", "dtype": "float32",
      "backbone": {"name": "resnet101_v1b", "norm_eval": True},
      "decode_head": {"name": "refinenet_head", "channels": 256, "crp_stages": 4,
                      "adapt_rcus": 2, "output_rcus": 3, "dropout": 0.5}})
  c = common.cityscapes_config(crop_size=(400, 400))
  c.data.ratio_range = (0.7, 1.3)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  c.train.batch_size = 8
  c = common.cnn_recipe(c, model, num_steps=80_000)
  c.optim.lr = 5e-4
  c.optim.lr_mults = (("^backbone/", 0.1),)
  c.optim.end_lr = 0.0
  return c
