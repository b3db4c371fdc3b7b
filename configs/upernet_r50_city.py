"""UPerNet (Xiao et al. 2018) on ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/upernet/upernet_r50_4xb2-80k_cityscapes-512x1024.py`: undilated
backbone (strides 1, 2, 2, 2: maps at 1/4 .. 1/32), PPM (1, 2, 3, 6) on the last map and an
FPN over all four, 512 channels, FCN auxiliary head on the stride-16 map (weight 0.4).
Reference mIoU 78.19 single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/upernet_r50_city.py --workdir=runs/upernet_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth, output_stride=32),
      decode_head={"name": "uper_head", "in_index": (0, 1, 2, 3), "channels": 512,
                   "pool_scales": (1, 2, 3, 6), "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
