"""SegFormer-B5 on ADE20K, the paper recipe (160k steps, batch 16, 640x640 crops).

  python -m segjax.main --config=configs/segformer_b5_ade.py --workdir=runs/segformer_b5_ade \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/mit-b5

Target: 51.0 mIoU (paper, single scale; mmseg 1.2.2's re-run 49.62 (640x640)), ADE20K val,
ImageNet-pretrained encoder via segjax.convert. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.segformer_ade20k("b5")
