"""ANN on a dilated ResNet-101 V1c: configs/ann_r50_d8_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/ann/ann_r101-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 77.14 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/ann_r101_d8_city.py --workdir=runs/ann_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import ann_r50_d8_city


def get_config():
  return ann_r50_d8_city.get_config(depth=101)
