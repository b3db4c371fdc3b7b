"""ANN (Zhu et al. 2019) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/ann/ann_r50-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 77.34 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/ann_r50_d8_city.py --workdir=runs/ann_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "ann_head", "in_index": (2, 3), "channels": 512,
                   "project_channels": 256, "query_scales": (1,),
                   "key_pool_scales": (1, 3, 6, 8), "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
