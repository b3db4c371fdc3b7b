"""Segmenter (Strudel et al., ICCV 2021), ViT-B/16 + linear decoder,
ADE20K 512x512, 160k steps.

Follows mmseg 1.2.2 `configs/segmenter/segmenter_vit-s_fcn_8xb1-160k_ade20k-512x512.py` (its
only linear-decoder file, ViT-S) with the ViT-B backbone of
`segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py`: the linear decoder (a 1x1 conv on the
last layer's tokens: mmseg's FCNHead with num_convs=0); ViT-B with its position embedding
learnt at 512x512 (bicubic resize), final LayerNorm, stochastic depth 0.1; inputs in
[-1, 1]; SGD lr 0.001, batch 8, sliding-window test 512/480 (`common.segmenter_ade20k`).
No reference mIoU: mmseg publishes none for this variant (its linear ViT-S: 45.75; the mask
decoder on this backbone: 49.60). Not yet trained with segjax.

  python -m segjax.main --config=configs/segmenter_vitb_linear_ade.py \\
      --workdir=runs/segmenter_vitb_linear --config.data.root=data/ade/ADEChallengeData2016 \\
      --config.init_from=weights/vit_base
"""
from configs import common


def get_config():
  return common.segmenter_ade20k("base", "linear")
