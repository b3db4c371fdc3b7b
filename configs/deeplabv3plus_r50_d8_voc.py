"""DeepLabv3+ (Chen et al. 2018) on a dilated ResNet-50 V1c, PASCAL VOC 2012 + SBD, 512x512.

Mirrors mmseg 1.2.2 `configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py`:
the Cityscapes model (depthwise separable ASPP at dilations 1/12/24/36 on the stride-8 map, a
48-channel stride-4 decoder, FCN auxiliary head at weight 0.4) with 21 classes, trained on
the 10,582 augmented images for 20k steps at batch 16 (SGD 0.01, momentum 0.9, wd 5e-4, poly
0.9 to 1e-4), whole-image test at scale (2048, 512). Reference mIoU 75.93 single scale
(mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/deeplabv3plus_r50_d8_voc.py \
      --workdir=runs/dlv3plus_r50_voc --config.data.root=data/voc_aug
"""
from configs import common
from configs import deeplabv3plus_r50_d8_city


def get_config():
  c = common.cnn_recipe(common.voc_aug_config(), deeplabv3plus_r50_d8_city.get_config().model,
                        num_steps=20_000)
  return c
