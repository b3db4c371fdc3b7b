"""Semantic FPN on PoolFormer-S36, ADE20K, mirroring mmseg 1.2.2's
configs/poolformer/fpn_poolformer_s36_8x4_512x512_40k_ade20k.py (the PVT authors' recipe, as the
PoolFormer code copies it; configs/common.py `semantic_fpn_ade20k`): 40k steps, batch 32,
AdamW 2e-4 with weight decay 1e-4 on every parameter, poly 0.9 to 0, 512x512 crops; backbone
with a GroupNorm on each of its four outputs (out_indices (0, 2, 4, 6)), no stochastic depth,
and its stem patch embedding frozen (mmpretrain's frozen_stages=0). mmseg trains in fp16
(AmpOptimWrapper); this config keeps float32 (`--config.model.dtype=bfloat16` is the
analogue).

  python -m segjax.convert --format=hf_backbone --input=/path/to/sail/poolformer_s36 \
      --config=configs/fpn_poolformer_s36_ade.py --output=/path/to/poolformer_s36
  python -m segjax.main --config=configs/fpn_poolformer_s36_ade.py \
      --workdir=runs/fpn_poolformer_s36_ade --config.data.root=/path/to/ADEChallengeData2016 \
      --config.init_from=/path/to/poolformer_s36

Target: 42.0 mIoU (PoolFormer paper, Semantic FPN, single scale, as
github.com/sail-sg/poolformer segmentation/README.md lists it; mmseg 1.2.2's re-run 41.61,
its configs/poolformer/metafile.yaml), ADE20K val. Not yet reproduced in segjax.
"""
from configs import common


def get_config():
  return common.semantic_fpn_ade20k({"name": "poolformer_s36", "drop_path_rate": 0.0},
                                    frozen=("^backbone/encoder/patch_embeddings_0/",))
