"""UPerNet (Xiao et al. 2018) on ConvNeXt-T (Liu et al. 2022), ADE20K 512x512, 160k steps.

Mirrors mmseg 1.2.2 `configs/convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py`:
ConvNeXt-T (widths 96/192/384/768, depths 3/3/9/3, drop_path 0.4, layer scale initialised at
1.0 as in that file, out norms on all four maps), UPerHead (512 channels, PPM 1/2/3/6,
dropout 0.1), FCN auxiliary head on the stride-16 map (256 channels, weight 0.4); AdamW lr
1e-4, betas (0.9, 0.999), weight decay 0.05 except on every bias and 1-D parameter (norms,
layer scales: LearningRateDecayOptimizerConstructor's rule); stage-wise lr decay 0.9 with
num_layers 6 (backbone stage i at 0.9 ** (6 - i), stem and downsampling layers at 0.9 ** 7,
heads and out norms at 1; ConvNeXt.layer_id); linear warmup over 1500 steps from 1e-6 x lr,
then poly 1.0 to 0 at 160k; global batch 16 (8 GPUs x 2); sliding-window test, 512x512
windows, stride 341. mmseg trains with fp16 AMP; `--config.model.dtype=bfloat16` is segjax's
counterpart (float32 here).

  python -m segjax.main --config=configs/upernet_convnext_t_ade.py \
      --workdir=runs/upernet_convnext_t --config.data.root=/path/to/ADEChallengeData2016 \
      --config.init_from=/path/to/convnext_t

(init_from: an ImageNet ConvNeXt converted with `python -m segjax.convert
--format=hf_backbone --input=convnext-tiny-224 --config=configs/upernet_convnext_t_ade.py
--output=...`.)

Target: 46.11 mIoU single scale (46.62 multi-scale + flip), ADE20K val: mmseg 1.2.2's model
zoo figure for this config. Not yet reproduced in segjax.
"""
from configs import common

# size -> (backbone, mmseg's drop_path_rate, its layer-decay num_layers).
SIZES = {"t": ("convnext_tiny", 0.4, 6), "s": ("convnext_small", 0.3, 12),
         "b": ("convnext_base", 0.4, 12)}


def convnext_upernet_ade20k(size: str):
  """The recipe above for ConvNeXt-`size` (t, s, b); mmseg's small/base configs differ from
  tiny only in arch, drop_path_rate and num_layers."""
  name, drop_path, num_layers = SIZES[size]
  c = common.ade20k_config()
  c.model = common.encoder_decoder(
      backbone={"name": name, "drop_path_rate": drop_path, "layer_scale_init_value": 1.0},
      decode_head={"name": "uper_head", "in_index": (0, 1, 2, 3), "channels": 512,
                   "pool_scales": (1, 2, 3, 6), "dropout": 0.1},
      auxiliary_head=[common.aux_fcn_head(in_index=2, channels=256, loss_weight=0.4)])
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.05
  c.optim.no_decay = (r"bias$", r"layer_scale_parameter$")
  c.optim.no_decay_norms = True
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 1.0
  c.optim.end_lr = 0.0
  c.optim.grad_clip = 0.0
  c.optim.layer_decay_rate = 0.9
  c.optim.layer_decay_num_layers = num_layers
  c.optim.layer_decay_type = "stage_wise"
  c.train.batch_size = 16
  c.train.num_steps = 160_000
  c.train.eval_every = 16_000
  c.train.checkpoint_every = 16_000
  c.eval.mode = "slide"
  c.eval.crop_size = (512, 512)
  c.eval.stride = (341, 341)
  return c


def get_config():
  return convnext_upernet_ade20k("t")
