"""PSANet on a dilated ResNet-101 V1c: configs/psanet_r50_d8_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/psanet/psanet_r101-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 79.31 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/psanet_r101_d8_city.py --workdir=runs/psanet_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import psanet_r50_d8_city


def get_config():
  return psanet_r50_d8_city.get_config(depth=101)
