"""OCRNet on HRNetV2-W48: configs/ocrnet_hr18_city.py with width 48 (FCN stage 720 wide).

Mirrors mmseg 1.2.2 `configs/ocrnet/ocrnet_hr48_4xb2-80k_cityscapes-512x1024.py`. Reference
mIoU 80.70 single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/ocrnet_hr48_city.py --workdir=runs/ocrnet_hr48 \\
      --config.data.root=data/cityscapes
"""
from configs import ocrnet_hr18_city


def get_config():
  return ocrnet_hr18_city.get_config(width=48)
