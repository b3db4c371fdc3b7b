"""UPerNet on Swin-S, ADE20K 512x512, 160k steps: configs/upernet_swin_t_ade.py's recipe with
depths 2/2/18/2, as mmseg 1.2.2
`configs/swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`
(which inherits the tiny config the same way; drop_path 0.3 there too).

  python -m segjax.main --config=configs/upernet_swin_s_ade.py --workdir=runs/upernet_swin_s \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/swin_s

Target: 47.72 mIoU single scale (49.24 multi-scale + flip), ADE20K val: mmseg 1.2.2's model
zoo figure for this config (the paper reports 47.6). Not yet reproduced in segjax.
"""
from configs import upernet_swin_t_ade


def get_config():
  return upernet_swin_t_ade.swin_upernet_ade20k("s")
