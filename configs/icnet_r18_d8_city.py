"""ICNet on a dilated ResNet-18 V1c: configs/icnet_r50_d8_city.py with depth 18.

Mirrors mmseg 1.2.2 `configs/icnet/icnet_r18-d8_4xb2-80k_cityscapes-832x832.py` (mmseg's
layer_channels (128, 512) are the ResNet-18 widths, which segjax reads from the network).
Reference mIoU 68.14 single-scale (mmseg's model zoo figure, not ours; 72.51 with ImageNet
weights; the paper's ICNet, on a half-width PSPNet-50, reports 69.5 on the test set).

  python -m segjax.main --config=configs/icnet_r18_d8_city.py --workdir=runs/icnet_r18 \\
      --config.data.root=data/cityscapes
"""
from configs import icnet_r50_d8_city


def get_config():
  return icnet_r50_d8_city.get_config(depth=18)
