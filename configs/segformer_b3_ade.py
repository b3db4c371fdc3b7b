"""SegFormer-B3 on ADE20K, the paper recipe (160k steps, batch 16, 512x512 crops).

  python -m segjax.main --config=configs/segformer_b3_ade.py --workdir=runs/segformer_b3_ade \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/mit-b3

Target: 49.4 mIoU (paper, single scale; mmseg 1.2.2's re-run 47.82), ADE20K val,
ImageNet-pretrained encoder via segjax.convert. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.segformer_ade20k("b3")
