"""PSPNet (Zhao et al. 2017) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py`: PPM with
pool scales 1, 2, 3, 6 on the stride-8 map, 512 channels, FCN auxiliary head (weight 0.4).
Reference mIoU 78.55 single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/pspnet_r50_d8_city.py --workdir=runs/pspnet_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "psp_head", "in_index": 3, "channels": 512,
                   "pool_scales": (1, 2, 3, 6), "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
