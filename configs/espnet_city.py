"""ESPNet (Mehta et al., ECCV 2018) on Cityscapes: ESP modules with p=2, q=8 and the light
decoder, logits at the input size (segjax/models/espnet.py; 362,949 parameters for 19
classes, the released model's architecture).

The official recipe (configs/common.py:espnet_cityscapes), batch 6 as the official script's
ESPNet default, started from an ESPNet-C run (configs/espnet_c_city.py; the official second
stage loads the pretrained ESPNet-C the same way, its encoder and its classifier):

  python -m segjax.main --config=configs/espnet_c_city.py:data/cityscapes \\
      --workdir=runs/espnet_c
  python -m segjax.main --config=configs/espnet_city.py:data/cityscapes --workdir=runs/espnet \\
      --config.init_from=runs/espnet_c

The official model has 20 classes on Cityscapes (the 19 plus the void pixels as a class of
their own); segjax ignores void pixels (255) and predicts 19.
Target: 60.3 class mIoU on the Cityscapes test set (the paper; the repository's README:
60.336), not a segjax measurement.
"""
from typing import Optional

from configs import common


def get_config(root: Optional[str] = None):
  return common.espnet_cityscapes({"name": "espnet", "p": 2, "q": 8}, batch_size=6, root=root)
