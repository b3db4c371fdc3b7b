"""PIDNet-S (Xu et al. 2023) on Cityscapes 1024x1024, 120k steps.

Mirrors mmseg 1.2.2 `configs/pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py`: the
three-branch PIDNet backbone with c = 32 (P branch 64 channels at 1/8, I branch down to 1/64
with PAPPM of 96 channels, light D branch, LightBag fusion) and PIDHead (128 channels,
dropout 0.1), whose outputs leave the head upsampled x8 with corners aligned (mmseg's
align_corners=True). mmseg's four losses: OHEM cross-entropy on the main logits (threshold 0.9,
min_kept 131072 over the batch, Cityscapes class weights); class-weighted cross-entropy on the
P branch's logits (0.4); the class-balanced boundary BCE on the D branch's logit against the
labels' edges dilated to 4 pixels (20; mmseg's GenerateEdge edge_width=4); the same OHEM on the
main logits at the pixels the D branch calls boundary, sigmoid > 0.8 (1). Random resize of
2048x1024 by 0.5-2, 1024x1024 crops (cat_max_ratio 0.75), flip, photometric distortion;
global batch 12 (2 GPUs x 6), SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every
parameter, poly 0.9 to 0 without warmup; whole-image test at 1024x2048.

Deviations: mmseg starts the backbone from ImageNet weights (its `pidnet-s_imagenet1k`
checkpoint); this config trains from scratch unless `--config.init_from` names converted
weights, so expect less than the reference. Where a crop is padded (images scaled below
1024 rows), mmseg's edge map holds 255 there and its boundary loss gives those pixels weight
0; segjax's labels cannot tell padding from ignored pixels, which are non-edge pixels in
both, so the padding counts as non-edge here. Reference mIoU 78.74 single-scale, 80.87
multi-scale + flip (mmseg's model zoo figures, not segjax measurements; the paper reports
78.8 on val). mmseg's trained checkpoint converts with `python -m segjax.convert
--format=mmseg --config=configs/pidnet_s_city.py`.

  python -m segjax.main --config=configs/pidnet_s_city.py --workdir=runs/pidnet_s \\
      --config.data.root=data/cityscapes
"""
from configs import common

OHEM = {"name": "ohem_mean_cross_entropy", "thresh": 0.9, "min_kept": 131072,
        "class_weight": "cityscapes"}


def get_config():
  c = common.cityscapes_config(crop_size=(1024, 1024))
  c.train.batch_size = 12
  c = common.cnn_recipe(c, common.encoder_decoder(
      backbone={"name": "pidnet", "channels": 32, "ppm_channels": 96, "num_stem_blocks": 2,
                "num_branch_blocks": 3},
      decode_head={
          "name": "pid_head", "channels": 128, "dropout": 0.1, "loss": (OHEM,),
          # The extra outputs: P logits, boundary logit, logits ++ boundary logit.
          "extra_loss_weights": (0.4, 20.0, 1.0),
          "extra_losses": (
              ({"name": "cross_entropy", "class_weight": "cityscapes",
                "avg_non_ignore": False},),
              ({"name": "boundary", "edge_width": 4},),
              ({**OHEM, "name": "boundary_ohem_cross_entropy", "boundary_threshold": 0.8},))}),
      num_steps=120_000)
  c.optim.end_lr = 0.0
  return c
