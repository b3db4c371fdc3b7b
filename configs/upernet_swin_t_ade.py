"""UPerNet (Xiao et al. 2018) on Swin-T (Liu et al. 2021), ADE20K 512x512, 160k steps.

Mirrors mmseg 1.2.2
`configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`:
Swin-T (embed 96, depths 2/2/6/2, heads 3/6/12/24, window 7, drop_path 0.3, out norms on all
four maps), UPerHead (512 channels, PPM 1/2/3/6, dropout 0.1) and an FCN auxiliary head on
the stride-16 map (256 channels, weight 0.4); AdamW lr 6e-5, betas (0.9, 0.999), weight
decay 0.01 except on the relative position bias tables, absolute position embeddings and
every parameter whose name contains "norm" (mmseg's custom_keys: the backbone's LayerNorms;
the heads' BatchNorms, named `bn`, ARE decayed, hence no_decay_norms=False); no head lr
multiplier; linear warmup over 1500 steps from 1e-6 x lr, then poly 1.0 to 0 at 160k; global
batch 16 (8 GPUs x 2); whole-image test at scale (2048, 512).

  python -m segjax.main --config=configs/upernet_swin_t_ade.py --workdir=runs/upernet_swin_t \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/swin_t

(init_from: an ImageNet Swin converted with `python -m segjax.convert --format=hf_backbone
--input=swin-tiny-patch4-window7-224 --config=configs/upernet_swin_t_ade.py --output=...`.)

Target: 44.41 mIoU single scale (45.79 multi-scale + flip), ADE20K val: mmseg 1.2.2's model
zoo figure for this config (the paper reports 44.5). Not yet reproduced in segjax.
"""
from configs import common

# Swin size -> backbone (mmseg's drop_path_rate is 0.3 for all three).
SIZES = {"t": "swin_tiny", "s": "swin_small", "b": "swin_base"}


def swin_upernet_ade20k(size: str):
  """The recipe above for Swin-`size` (t, s, b); mmseg's small/base configs inherit it."""
  c = common.ade20k_config()
  c.model = common.encoder_decoder(
      backbone={"name": SIZES[size], "drop_path_rate": 0.3},
      decode_head={"name": "uper_head", "in_index": (0, 1, 2, 3), "channels": 512,
                   "pool_scales": (1, 2, 3, 6), "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head(in_index=2, channels=256, loss_weight=0.4)])
  c.optim.name = "adamw"
  c.optim.lr = 6e-5
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.01
  c.optim.no_decay = ("absolute_pos_embed", "relative_position_bias_table", "norm")
  c.optim.no_decay_norms = False
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 1.0
  c.optim.end_lr = 0.0
  c.optim.grad_clip = 0.0
  c.optim.layer_decay_rate = 1.0
  c.train.batch_size = 16
  c.train.num_steps = 160_000
  c.train.eval_every = 16_000
  c.train.checkpoint_every = 16_000
  c.eval.mode = "whole"
  return c


def get_config():
  return swin_upernet_ade20k("t")
