"""DANet (Fu et al. 2019) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/danet/danet_r50-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 79.34 single-scale, mmseg's model zoo; not a segjax measurement).

The head's three outputs (pam_cam, pam, cam) are all trained with weight 1, as in mmseg.

  python -m segjax.main --config=configs/danet_r50_d8_city.py --workdir=runs/danet_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "da_head", "in_index": 3, "channels": 512, "pam_channels": 64,
                   "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
