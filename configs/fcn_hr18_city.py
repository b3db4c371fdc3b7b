"""FCN on HRNetV2-W18 (Sun et al. 2019), Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/hrnet/fcn_hr18_4xb2-80k_cityscapes-512x1024.py`: the four HRNet
maps resized to stride 4 and concatenated (270 channels), one 1x1 ConvBNAct, no dropout, no
auxiliary head. Reference mIoU 78.65 single-scale (mmseg's model zoo figure, not a segjax
measurement).

  python -m segjax.main --config=configs/fcn_hr18_city.py --workdir=runs/fcn_hr18 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config():
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "hrnetv2_w18"},
      decode_head={"name": "fcn_head", "in_index": (0, 1, 2, 3),
                   "input_transform": "resize_concat", "channels": 18 + 36 + 72 + 144,
                   "kernel_size": 1, "num_convs": 1, "concat_input": False, "dropout": 0.0}))
