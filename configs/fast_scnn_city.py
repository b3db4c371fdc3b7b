"""Fast-SCNN (Poudel et al. 2019) on Cityscapes 512x1024, 160k steps.

Mirrors mmseg 1.2.2 `configs/fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py`: learning
to downsample (32, 48, 64), global feature extractor (bottlenecks 64/96/128, PPM), feature
fusion at 1/8 (128), a depthwise separable FCN classifier, and FCN auxiliary heads (32
channels, weight 0.4) on the global extractor's 1/32 map and the 1/8 downsampled map; BatchNorm
momentum 0.01 everywhere; every output trained with the per-class sigmoid cross-entropy
(mmseg's use_sigmoid=True, averaged over all pixels and classes). From scratch, global batch
32 (8 GPUs x 4), SGD lr 0.12, momentum 0.9, weight decay 4e-5, poly 0.9 to 1e-4, whole-image
test at 1024x2048. 1.46M parameters. Reference mIoU 70.96 single-scale (mmseg's model zoo
figure; the paper reports 68.0 on the test set), not a segjax measurement.

  python -m segjax.main --config=configs/fast_scnn_city.py --workdir=runs/fast_scnn \\
      --config.data.root=data/cityscapes
"""
from configs import common

BN = {"bn_momentum": 0.01}  # mmseg's norm_cfg momentum (PyTorch's convention)
LOSS = ({"name": "binary_cross_entropy", "avg_non_ignore": False},)


def aux_head(in_index: int) -> dict:
  return {**common.aux_fcn_head(in_index, channels=32), "loss": LOSS, **BN}


def get_config():
  c = common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": "fast_scnn", **BN},
      decode_head={"name": "sep_fcn_head", "in_index": -1, "channels": 128, "num_convs": 2,
                   "concat_input": False, "dropout": 0.1, "loss": LOSS, **BN},
      auxiliary_head=[aux_head(-2), aux_head(-3)]), num_steps=160_000)
  c.train.batch_size = 32
  c.optim.lr = 0.12
  c.optim.weight_decay = 4e-5
  return c
