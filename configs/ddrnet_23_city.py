"""DDRNet-23 (Hong et al. 2021) on Cityscapes 1024x1024, 120k steps: configs/ddrnet_23_slim_city.py
at twice the width (c = 64: spatial branch 128 channels, DDRHead 128 channels).

Mirrors mmseg 1.2.2 `configs/ddrnet/ddrnet_23_in1k-pre_2xb6-120k_cityscapes-1024x1024.py`;
mmseg starts from ImageNet weights (`ddrnet23-in1kpre_3rdparty`), this config from scratch
unless `--config.init_from` is given. Reference mIoU 79.99 single-scale, 81.71 multi-scale +
flip (mmseg's model zoo figures, not segjax measurements; the paper reports 79.5 on val).

  python -m segjax.main --config=configs/ddrnet_23_city.py --workdir=runs/ddrnet_23 \\
      --config.data.root=data/cityscapes
"""
from configs import ddrnet_23_slim_city


def get_config():
  return ddrnet_23_slim_city.get_config(channels=64, head_channels=128)
