"""Semantic FPN on PVT-Tiny (PVT v1), ADE20K, the PVT authors' recipe (40k steps, batch 32,
AdamW 2e-4, 512x512 crops; configs/common.py `semantic_fpn_ade20k`), mirroring
github.com/whai362/PVT segmentation/configs/sem_fpn/PVT/fpn_pvt_t_ade20k_40k.py.

  python -m segjax.convert --format=hf_backbone --input=/path/to/Xrenya/pvt-tiny-224 \
      --config=configs/fpn_pvt_t_ade.py --output=/path/to/pvt_tiny
  python -m segjax.main --config=configs/fpn_pvt_t_ade.py --workdir=runs/fpn_pvt_t_ade \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/pvt_tiny

Target: 35.7 mIoU, ADE20K val, single scale: the PVT paper's Semantic FPN figure, as the
'mIoU(paper)' column of the authors' segmentation/README.md quotes it (36.6 in its
'mIoU(code)' column, their released code and this config). Not yet reproduced in
segjax. The backbone follows HF's PvtModel (cls token and final norm in stage 4), which the
authors' segmentation backbone drops.
"""
from configs import common


def get_config():
  return common.semantic_fpn_ade20k({"name": "pvt_tiny", "drop_path_rate": 0.1})
