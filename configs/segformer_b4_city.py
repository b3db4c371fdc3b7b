"""SegFormer-B4 on Cityscapes, the paper recipe (160k steps, batch 8, 1024x1024 crops).

  python -m segjax.main --config=configs/segformer_b4_city.py --workdir=runs/segformer_b4_city \
      --config.data.root=/path/to/cityscapes --config.init_from=/path/to/converted/mit-b4

Target: 82.3 mIoU (paper, single-scale sliding-window val, ImageNet-pretrained encoder via
segjax.convert). Not yet reproduced in segjax; see the README results table.
"""
from configs import common


def get_config():
  return common.segformer_cityscapes("b4")
