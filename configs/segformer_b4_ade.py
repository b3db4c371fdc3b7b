"""SegFormer-B4 on ADE20K, the paper recipe (160k steps, batch 16, 512x512 crops).

  python -m segjax.main --config=configs/segformer_b4_ade.py --workdir=runs/segformer_b4_ade \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/mit-b4

Target: 50.3 mIoU (paper, single scale; mmseg 1.2.2's re-run 48.46), ADE20K val,
ImageNet-pretrained encoder via segjax.convert. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.segformer_ade20k("b4")
