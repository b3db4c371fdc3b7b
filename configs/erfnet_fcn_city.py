"""ERFNet (Romera et al., T-ITS 2018) with an FCN head, Cityscapes 512x1024, 160k steps.

Mirrors mmseg 1.2.2 `configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py`: the ERFNet
backbone (the paper's whole encoder-decoder, 1/2-resolution 16-channel output; see
segjax/models/backbones/erfnet.py) under mmseg's FCNHead (one 3x3 conv, 128 channels, no
input concatenation, dropout 0.1); global batch 16 (4 GPUs x 4), 160k steps of mmseg's CNN
SGD schedule (lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9 to 1e-4); whole-image test.
Reference mIoU 72.5 single-scale, 74.75 multi-scale + flip (mmseg's model-zoo figures, not a
segjax measurement).

  python -m segjax.main --config=configs/erfnet_fcn_city.py --workdir=runs/erfnet \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config():
  c = common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "erfnet", "dropout_ratio": 0.1},
      decode_head={"name": "fcn_head", "channels": 128, "num_convs": 1, "concat_input": False,
                   "dropout": 0.1}), num_steps=160_000)
  c.train.batch_size = 16
  return c
