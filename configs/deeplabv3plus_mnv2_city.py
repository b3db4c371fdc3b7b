"""DeepLabv3+ on a dilated MobileNetV2 (output stride 8), Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2
`configs/mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py`: the
DeepLabv3+ R-101 recipe with MobileNetV2 (strides 1,2,2,1,1,1,1, dilations 1,1,1,2,2,4,4;
maps of layers 2, 3, 5, 7): separable ASPP on the 320-channel map, decoder on the
24-channel stride-4 map, FCN auxiliary head on the 96-channel map (weight 0.4). Reference
mIoU 75.20 single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/deeplabv3plus_mnv2_city.py --workdir=runs/dlv3plus_mnv2 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config():
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "mobilenet_v2", "widen_factor": 1.0, "strides": (1, 2, 2, 1, 1, 1, 1),
                "dilations": (1, 1, 1, 2, 2, 4, 4), "out_indices": (1, 2, 4, 6)},
      decode_head={"name": "sep_aspp_head", "in_index": 3, "channels": 512,
                   "dilations": (1, 12, 24, 36), "c1_in_index": 0, "c1_channels": 48,
                   "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head()]))
