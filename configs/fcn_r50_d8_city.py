"""FCN (Long et al. 2015) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 73.61 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/fcn_r50_d8_city.py --workdir=runs/fcn_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "fcn_head", "in_index": 3, "channels": 512, "num_convs": 2,
                   "concat_input": True, "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
