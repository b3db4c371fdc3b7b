"""OCRNet on HRFormer-S (Yuan et al., NeurIPS 2021), Cityscapes 512x1024, 80k steps.

The official recipe (github.com/HRNet/HRFormer, seg/scripts/cityscapes/hrt/
run_hrt_small_ocr_v2_ohem.sh with configs/cityscapes/H_48_D_4.json, model HRT_SMALL_OCR_V2):
512x1024 crops, batch 8, 80k iterations; AdamW lr 1e-4, weight decay 0.01 except biases,
norm layers and relative position bias tables, 1500 linear warmup steps from 1e-6 x lr, then
poly 0.9; drop path 0.2 (0.4 for HRFormer-B); whole-image test at 1024x2048. The head is an
OCRNet cascade on the four HRFormer maps resized and concatenated (480 channels): an
auxiliary stage of one 3x3 ConvBNAct (512) and a classifier, loss weight 0.4, whose logits are
the OCR head's soft object regions (3x3 bottleneck to 512, object attention at 256, dropout
0.05). Losses as the official `fs_auxohemce_loss`: OHEM cross-entropy (threshold 0.9, at least
100k pixels per image) on the OCR output, cross-entropy on the auxiliary one, both with the
Cityscapes class weights.

Known differences from the official code: the OHEM loss is mmseg's (kept pixels' weighted
losses summed over all labelled pixels' weights; openseg averages over the kept pixels), the
maps are concatenated and the logits resized without aligned corners (openseg aligns them),
the heads' 3x3 convs carry no bias before their BN (the official ones do; BN absorbs it), and
the data pipeline is segjax's Cityscapes one (cat_max_ratio 0.75 crops, photometric
distortion; openseg: aspect jitter 0.9-1.1, brightness shifts only). Initialise the backbone
from the official ImageNet weights (`python -m segjax.convert --format=hrformer_official`).

Target: 80.0 mIoU single-scale (81.0 multi-scale + flip), Cityscapes val: the official
repository's Cityscapes table (README.md, "OCRNet | HRFormer-S | 7x7"), not a segjax
measurement.

  python -m segjax.convert --format=hrformer_official --input=hrt_small.pth \\
      --config=configs/ocr_hrformer_s_city.py --output=pretrained/hrformer_s
  python -m segjax.main --config=configs/ocr_hrformer_s_city.py --workdir=runs/ocr_hrformer_s \\
      --config.data.root=data/cityscapes --config.init_from=pretrained/hrformer_s
"""
from configs import common

# variant -> (backbone, drop path rate of the official script)
VARIANTS = {"s": ("hrformer_small", 0.2), "b": ("hrformer_base", 0.4)}


def get_config(variant: str = "s"):
  backbone, drop_path_rate = VARIANTS[variant]
  all_maps = {"in_index": (0, 1, 2, 3), "input_transform": "resize_concat"}
  class_weight = {"class_weight": "cityscapes"}
  c = common.cityscapes_config(crop_size=(512, 1024))
  c.model = common.encoder_decoder(
      backbone={"name": backbone, "drop_path_rate": drop_path_rate},
      decode_head=[
          {"name": "fcn_head", **all_maps, "channels": 512, "kernel_size": 3, "num_convs": 1,
           "concat_input": False, "dropout": 0.0, "loss_weight": 0.4,
           "loss": ({"name": "cross_entropy", **class_weight},)},
          {"name": "ocr_head", **all_maps, "channels": 512, "ocr_channels": 256,
           "dropout": 0.05,
           "loss": ({"name": "ohem_cross_entropy", "thresh": 0.9, "min_kept": 100_000,
                     **class_weight},)},
      ])
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 0.01
  # openseg's group_weight: conv and linear weights decay; biases, norm layers and the
  # relative position bias tables do not. No separate head learning rate.
  c.optim.no_decay = (r"/bias$", "relative_position_bias_table")
  c.optim.no_decay_norms = True
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 0.9
  c.optim.end_lr = 0.0
  c.train.batch_size = 8
  c.train.num_steps = 80_000
  c.train.eval_every = 8_000
  c.train.checkpoint_every = 8_000
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c
