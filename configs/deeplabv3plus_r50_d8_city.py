"""DeepLabv3+ (Chen et al. 2018) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2
`configs/deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py`: depthwise
separable ASPP (dilations 1, 12, 24, 36) on the stride-8 map, 512 channels, decoder on the
stride-4 map reduced to 48 channels, FCN auxiliary head (weight 0.4). Reference mIoU 80.09
single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/deeplabv3plus_r50_d8_city.py \\
      --workdir=runs/dlv3plus_r50 --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "sep_aspp_head", "in_index": 3, "channels": 512,
                   "dilations": (1, 12, 24, 36), "c1_in_index": 0, "c1_channels": 48,
                   "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
