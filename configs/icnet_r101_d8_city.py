"""ICNet on a dilated ResNet-101 V1c: configs/icnet_r50_d8_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/icnet/icnet_r101-d8_4xb2-80k_cityscapes-832x832.py`.
Reference mIoU 70.28 single-scale (mmseg's model zoo figure, not ours; 75.57 with ImageNet
weights).

  python -m segjax.main --config=configs/icnet_r101_d8_city.py --workdir=runs/icnet_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import icnet_r50_d8_city


def get_config():
  return icnet_r50_d8_city.get_config(depth=101)
