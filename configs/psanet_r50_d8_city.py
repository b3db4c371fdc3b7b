"""PSANet (Zhao et al. 2018) on a dilated ResNet-50 V1c, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/psanet/psanet_r50-d8_4xb2-80k_cityscapes-512x1024.py` (reference
mIoU 77.24 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/psanet_r50_d8_city.py --workdir=runs/psanet_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "psa_head", "in_index": 3, "channels": 512, "mask_size": (97, 97),
                   "psa_type": "bi-direction", "compact": False, "shrink_factor": 2,
                   "normalization_factor": 1.0, "psa_softmax": True, "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
