"""ICNet (Zhao et al. 2018) on a dilated ResNet-50 V1c, Cityscapes 832x832, 80k steps.

Mirrors mmseg 1.2.2 `configs/icnet/icnet_r50-d8_4xb2-80k_cityscapes-832x832.py`: the image
at full, half and quarter resolution through a light 3-conv branch (1/8), ResNet stages 1-2
(1/16) and stages 3-4 + pyramid pooling (1/32, PSP 512 channels), fused by ICNeck's two
cascade feature fusion units (128 channels); an FCN classifier (one conv, no dropout) on the
fused 1/8 map and FCN auxiliary heads (weight 0.4) on the two fusion units' low branches.
From scratch (no ImageNet weights), random resize of 2048x1024 by 0.5-2, 832x832 crops,
global batch 8, SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9 to 1e-4, whole-image
test at 1024x2048. Reference mIoU 68.91 single-scale (mmseg's model zoo figure, not a segjax
measurement; 74.58 with ImageNet weights).

  python -m segjax.main --config=configs/icnet_r50_d8_city.py --workdir=runs/icnet_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  fcn = {"name": "fcn_head", "channels": 128, "num_convs": 1, "concat_input": False}
  c = common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "icnet", "backbone_cfg": common.dilated_resnet(depth),
                "light_branch_middle_channels": 32, "psp_out_channels": 512,
                "out_channels": (64, 256, 256)},
      neck={"name": "icneck", "out_channels": 128},
      decode_head={**fcn, "in_index": 2, "dropout": 0.0},
      auxiliary_head=[{**fcn, "in_index": i, "dropout": 0.1, "loss_weight": 0.4}
                      for i in (0, 1)]))
  c.data.crop_size = (832, 832)
  c.eval.crop_size = (832, 832)
  return c
