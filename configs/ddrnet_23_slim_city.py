"""DDRNet-23-slim (Hong et al. 2021) on Cityscapes 1024x1024, 120k steps.

Mirrors mmseg 1.2.2 `configs/ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py`:
the dual-resolution backbone with c = 32 (spatial branch 64 channels at 1/8, context branch
down to 1/64, two bilateral fusions, DAPPM with 128 channels) and DDRHead (64 channels, no
dropout) on the fused map plus its auxiliary classifier on the stage-3 spatial map. Both
outputs train with mmseg's OhemCrossEntropy (`ohem_mean_cross_entropy`: threshold 0.9,
min_kept 131072 over the batch, Cityscapes class weights), the auxiliary one at weight 0.4.
Random resize of 2048x1024 by 0.5-2, 1024x1024 crops (cat_max_ratio 0.75), flip, photometric
distortion; global batch 12 (2 GPUs x 6), SGD lr 0.01, momentum 0.9, weight decay 5e-4 on
every parameter, poly 0.9 to 0 without warmup; whole-image test at 1024x2048.

mmseg starts the backbone from ImageNet weights (its `ddrnet23s-in1kpre_3rdparty` checkpoint);
this config trains from scratch unless `--config.init_from` names converted weights, so expect
less than the reference: mIoU 77.84 single-scale, 80.15 multi-scale + flip (mmseg's model zoo
figures, not segjax measurements; the paper reports 77.8 on val). mmseg's trained checkpoint
converts with `python -m segjax.convert --format=mmseg --config=configs/ddrnet_23_slim_city.py`.

  python -m segjax.main --config=configs/ddrnet_23_slim_city.py --workdir=runs/ddrnet_23_slim \\
      --config.data.root=data/cityscapes
"""
from configs import common

# mmseg's loss_decode[0] (the main output; its [1], the same at 0.4, is DDRHead's
# extra_loss_weights).
OHEM = ({"name": "ohem_mean_cross_entropy", "thresh": 0.9, "min_kept": 131072,
         "class_weight": "cityscapes"},)


def get_config(channels: int = 32, head_channels: int = 64):
  c = common.cityscapes_config(crop_size=(1024, 1024))
  c.train.batch_size = 12
  c = common.cnn_recipe(c, common.encoder_decoder(
      backbone={"name": "ddrnet", "channels": channels, "ppm_channels": 128},
      decode_head={"name": "ddr_head", "channels": head_channels, "dropout": 0.0,
                   "extra_loss_weights": (0.4,), "loss": OHEM}), num_steps=120_000)
  c.optim.end_lr = 0.0
  return c
