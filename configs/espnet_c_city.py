"""ESPNet-C (Mehta et al., ECCV 2018), the encoder alone, on Cityscapes: the first stage of the
official ESPNet training (segjax/models/espnet.py, p=2, q=8, logits at 1/8).

The official recipe (configs/common.py:espnet_cityscapes), batch 12 as the official script's
ESPNet-C default. The official script trains ESPNet-C against labels downsampled 8x (nearest);
segjax's loss reads the logits upsampled to the full labels instead. Parameters are ESPNet's
`encoder/`, so the run initialises configs/espnet_city.py (its config.init_from).

  python -m segjax.main --config=configs/espnet_c_city.py:data/cityscapes \\
      --workdir=runs/espnet_c

Target: none quoted here for ESPNet-C on Cityscapes (its role is ESPNet's first stage).
"""
from typing import Optional

from configs import common


def get_config(root: Optional[str] = None):
  return common.espnet_cityscapes({"name": "espnet_c", "p": 2, "q": 8}, batch_size=12,
                                  root=root)
