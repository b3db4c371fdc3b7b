"""Semantic FPN on PoolFormer-S12, ADE20K, mirroring mmseg 1.2.2's
configs/poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py (the PVT authors' recipe, as the
PoolFormer code copies it; configs/common.py `semantic_fpn_ade20k`): 40k steps, batch 32,
AdamW 2e-4 with weight decay 1e-4 on every parameter, poly 0.9 to 0, 512x512 crops; backbone
with a GroupNorm on each of its four outputs (out_indices (0, 2, 4, 6)), no stochastic depth,
and its stem patch embedding frozen (mmpretrain's frozen_stages=0). mmseg trains in fp16
(AmpOptimWrapper); this config keeps float32 (`--config.model.dtype=bfloat16` is the
analogue).

  python -m segjax.convert --format=hf_backbone --input=/path/to/sail/poolformer_s12 \
      --config=configs/fpn_poolformer_s12_ade.py --output=/path/to/poolformer_s12
  python -m segjax.main --config=configs/fpn_poolformer_s12_ade.py \
      --workdir=runs/fpn_poolformer_s12_ade --config.data.root=/path/to/ADEChallengeData2016 \
      --config.init_from=/path/to/poolformer_s12

Target: 37.2 mIoU (PoolFormer paper, Semantic FPN, single scale, as
github.com/sail-sg/poolformer segmentation/README.md lists it; mmseg 1.2.2's re-run 36.68,
its configs/poolformer/metafile.yaml), ADE20K val. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.semantic_fpn_ade20k({"name": "poolformer_s12", "drop_path_rate": 0.0},
                                    frozen=("^backbone/encoder/patch_embeddings_0/",))
