"""Segmenter (Strudel et al., ICCV 2021), ViT-B/16 + mask transformer,
ADE20K 512x512, 160k steps.

Mirrors mmseg 1.2.2 `configs/segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py`:
the mask transformer decoder (2 layers of 768 channels, 12 heads, 150 class embeddings;
masks = cosine similarities of patch and class embeddings, LayerNorm over classes); ViT-B
with its position embedding learnt at 512x512 (bicubic resize), final LayerNorm, stochastic
depth 0.1; inputs in [-1, 1]; SGD lr 0.001, batch 8, sliding-window test 512/480
(`common.segmenter_ade20k`).
Reference mIoU 49.60 single-scale (mmseg's model-zoo figure, not a segjax measurement),
ADE20K val, from the ImageNet ViT weights mmseg's config loads.

  python -m segjax.main --config=configs/segmenter_vitb_mask_ade.py \\
      --workdir=runs/segmenter_vitb_mask --config.data.root=data/ade/ADEChallengeData2016 \\
      --config.init_from=weights/vit_base
"""
from configs import common


def get_config():
  return common.segmenter_ade20k("base", "mask")
