"""UPerNet on Swin-B (window 7, ImageNet-1k pretraining), ADE20K 512x512, 160k steps:
configs/upernet_swin_t_ade.py's recipe with embed 128, depths 2/2/18/2, heads 4/8/16/32 (head
input widths 128/256/512/1024), as mmseg 1.2.2
`configs/swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`.
`--config.model.backbone.name=swin_base_w12` gives the window-12 (384x384-pretrained) model.

  python -m segjax.main --config=configs/upernet_swin_b_ade.py --workdir=runs/upernet_swin_b \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/swin_b

Target: 47.99 mIoU single scale (49.57 multi-scale + flip), ADE20K val: mmseg 1.2.2's model
zoo figure for this config. Not yet reproduced in segjax.
"""
from configs import upernet_swin_t_ade


def get_config():
  return upernet_swin_t_ade.swin_upernet_ade20k("b")
