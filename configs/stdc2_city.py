"""STDC2: configs/stdc1_city.py with STDCNet2 (4, 5 and 3 STDC modules per stage).

Mirrors mmseg 1.2.2 `configs/stdc/stdc2_4xb12-80k_cityscapes-512x1024.py` (reference mIoU
73.15 single-scale, mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/stdc2_city.py --workdir=runs/stdc2 \\
      --config.data.root=data/cityscapes
"""
from configs import stdc1_city


def get_config():
  return stdc1_city.get_config("STDCNet2")
