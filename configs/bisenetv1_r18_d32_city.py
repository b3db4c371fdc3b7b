"""BiSeNet V1 (Yu et al. 2018) on ResNet-18, Cityscapes 1024x1024, 160k steps, from scratch.

Mirrors mmseg 1.2.2 `configs/bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py`:
spatial path 64/64/64/128, context path on an undilated ResNet-18 (mmseg's plain `ResNet`:
the 7x7-stem V1b, output stride 32) with ARMs and a 128-channel top-down path, FFM to 256
channels; FCN decode head (one 3x3 ConvBNAct of 256) on the fused 1/8 map and two FCN
auxiliary heads (64 channels, loss weight 1.0) on the context path's 1/8 and 1/16 maps.
1024x1024 crops, global batch 16, SGD lr 0.025 (warmup 1000 steps from x0.1, then poly 0.9
to 1e-4). Reference mIoU 74.44 single-scale (mmseg's model zoo figure, not a segjax
measurement).

  python -m segjax.main --config=configs/bisenetv1_r18_d32_city.py --workdir=runs/bisenetv1 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config():
  return common.realtime_cityscapes(
      common.encoder_decoder(
          backbone={"name": "bisenetv1", "backbone_cfg": {"name": "resnet18_v1b"},
                    "spatial_channels": (64, 64, 64, 128), "context_channels": (128, 256, 512),
                    "out_channels": 256},
          decode_head={"name": "fcn_head", "in_index": 0, "channels": 256, "num_convs": 1,
                       "concat_input": False, "dropout": 0.1},
          auxiliary_head=[common.aux_fcn_head(in_index=i, channels=64, loss_weight=1.0)
                          for i in (1, 2)]),
      crop_size=(1024, 1024), batch_size=16, num_steps=160_000, lr=0.025)
