"""UPerNet on ConvNeXt-B, ADE20K 512x512, 160k steps: configs/upernet_convnext_t_ade.py's
recipe with widths 128/256/512/1024, depths 3/3/27/3, drop_path 0.4 and layer-decay
num_layers 12, as mmseg 1.2.2
`configs/convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py`.

  python -m segjax.main --config=configs/upernet_convnext_b_ade.py \
      --workdir=runs/upernet_convnext_b --config.data.root=/path/to/ADEChallengeData2016 \
      --config.init_from=/path/to/convnext_b

Target: 48.71 mIoU single scale (49.54 multi-scale + flip), ADE20K val: mmseg 1.2.2's model
zoo figure for this config. Not yet reproduced in segjax.
"""
from configs import upernet_convnext_t_ade


def get_config():
  return upernet_convnext_t_ade.convnext_upernet_ade20k("b")
