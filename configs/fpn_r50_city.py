"""Semantic FPN (Kirillov et al. 2019) on ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py`: undilated
backbone (strides 1, 2, 2, 2), FPN neck with 256 channels and 4 outputs, FPN head with 128
channels merging the four levels at stride 4; no auxiliary head. Reference mIoU 74.52
single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/fpn_r50_city.py --workdir=runs/fpn_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth, output_stride=32),
      neck={"name": "fpn", "out_channels": 256, "num_outs": 4},
      decode_head={"name": "fpn_head", "in_index": (0, 1, 2, 3),
                   "feature_strides": (4, 8, 16, 32), "channels": 128, "dropout": 0.1}))
