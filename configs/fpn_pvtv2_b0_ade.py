"""Semantic FPN on PVT v2-B0, ADE20K, the PVT authors' recipe (40k steps, batch 32, AdamW
2e-4, 512x512 crops; configs/common.py `semantic_fpn_ade20k`), mirroring
github.com/whai362/PVTv2-Seg configs/sem_fpn/PVTv2/fpn_pvtv2_b0_ade20k_40k.py.

  python -m segjax.convert --format=hf_backbone --input=/path/to/OpenGVLab/pvt_v2_b0 \
      --config=configs/fpn_pvtv2_b0_ade.py --output=/path/to/pvt_v2_b0
  python -m segjax.main --config=configs/fpn_pvtv2_b0_ade.py --workdir=runs/fpn_pvtv2_b0_ade \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/pvt_v2_b0

Target: 37.2 mIoU (PVT v2 paper, Semantic FPN, single scale; the figure
github.com/whai362/PVTv2-Seg's README.md lists), ADE20K val. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.semantic_fpn_ade20k({"name": "pvt_v2_b0", "drop_path_rate": 0.1})
