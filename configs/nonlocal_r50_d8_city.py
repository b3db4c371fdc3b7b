"""Non-local network (Wang et al. 2018) on a dilated ResNet-50 V1c, Cityscapes 512x1024,
80k steps.

Mirrors mmseg 1.2.2 `configs/nonlocal_net/nonlocal_r50-d8_4xb2-80k_cityscapes-512x1024.py`
(reference mIoU 78.01 single-scale, mmseg's model zoo; not a segjax measurement).

  python -m segjax.main --config=configs/nonlocal_r50_d8_city.py --workdir=runs/nonlocal_r50 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(depth: int = 50):
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone=common.dilated_resnet(depth),
      decode_head={"name": "nl_head", "in_index": 3, "channels": 512, "reduction": 2,
                   "use_scale": True, "mode": "embedded_gaussian", "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
