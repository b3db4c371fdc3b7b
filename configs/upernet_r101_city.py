"""UPerNet on ResNet-101 V1c: configs/upernet_r50_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/upernet/upernet_r101_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 79.40 single-scale, mmseg's model zoo figure, not ours).

  python -m segjax.main --config=configs/upernet_r101_city.py --workdir=runs/upernet_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import upernet_r50_city


def get_config():
  return upernet_r50_city.get_config(depth=101)
