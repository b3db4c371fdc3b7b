"""Semantic FPN on ResNet-101 V1c: configs/fpn_r50_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/sem_fpn/fpn_r101_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 75.80 single-scale, mmseg's model zoo figure, not ours).

  python -m segjax.main --config=configs/fpn_r101_city.py --workdir=runs/fpn_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import fpn_r50_city


def get_config():
  return fpn_r50_city.get_config(depth=101)
