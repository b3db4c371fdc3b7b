"""PSPNet on a dilated ResNet-101 V1c: configs/pspnet_r50_d8_city.py with depth 101.

Mirrors mmseg 1.2.2 `configs/pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py`
(reference mIoU 79.76 single-scale, mmseg's model zoo figure, not ours).

  python -m segjax.main --config=configs/pspnet_r101_d8_city.py --workdir=runs/pspnet_r101 \\
      --config.data.root=data/cityscapes
"""
from configs import pspnet_r50_d8_city


def get_config():
  return pspnet_r50_d8_city.get_config(depth=101)
