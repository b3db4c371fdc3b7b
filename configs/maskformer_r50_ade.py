"""MaskFormer (Cheng et al. 2021) on ResNet-50, ADE20K 512x512, 160k steps.

Mirrors mmseg 1.2.2 `configs/maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py`:
ResNet-50 V1b (torchvision's: 7x7 stem, strides 1, 2, 2, 2, no dilation, BN statistics frozen
(norm_eval) but its affine parameters trained), the pixel decoder (FPN with GroupNorm 32, 256
channels, 256-channel mask features at 1/4), 100 queries through 6 post-norm DETR decoder
layers (256 wide, 8 heads, FFN 2048, dropout 0.1 after each branch and after the FFN's
activation), class cross-entropy (no-object weight 0.1), focal (weight 20) and dice (weight 1)
mask losses on Hungarian-matched segments, the same weights as matching costs, every decoder
layer supervised; AdamW lr 1e-4, betas (0.9, 0.999), weight decay 1e-4 on every parameter,
backbone at lr x0.1, gradient norm clipped at 0.01, poly 0.9 to 0 over 160k steps without
warmup; global batch 16 (8 GPUs x 2); whole-image test at scale (2048, 512).

Differences from mmseg: no dropout on the attention probabilities (mmseg's attn_drop 0.1;
segjax's attention is layers.dot_product_attention, HF's DetrAttention default is 0 too), and
the semantic map is computed at 1/4 and then upsampled (HF's post-processing) where mmseg
upsamples the mask logits before the sigmoid.

  python -m segjax.main --config=configs/maskformer_r50_ade.py --workdir=runs/maskformer_r50 \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/r50

(init_from: torchvision's ImageNet ResNet-50 converted with `python -m segjax.convert
--format=torchvision_resnet --input=resnet50-0676ba61.pth --config=configs/maskformer_r50_ade.py
--output=...`; an HF MaskFormer converts whole with --format=hf_maskformer.)

Target: 44.29 mIoU single scale, ADE20K val: mmseg 1.2.2's model zoo figure for this config
(the paper's R50 MaskFormer: 44.5). Not yet reproduced in segjax.
"""
import ml_collections

from configs import common


def maskformer_ade20k(backbone: dict) -> ml_collections.ConfigDict:
  """The recipe above around `backbone` (a model.backbone entry with four output maps)."""
  c = common.ade20k_config()
  c.model = ml_collections.ConfigDict({
      "name": "maskformer", "dtype": "float32", "backbone": backbone,
      "num_queries": 100, "hidden_size": 256, "decoder_layers": 6,
      "decoder_attention_heads": 8, "decoder_ffn_dim": 2048, "dropout": 0.1,
      "activation_dropout": 0.1, "fpn_feature_size": 256, "mask_feature_size": 256,
      "cross_entropy_weight": 1.0, "mask_weight": 20.0, "dice_weight": 1.0,
      "no_object_weight": 0.1, "deep_supervision": True})
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 1e-4
  c.optim.no_decay = ()
  c.optim.no_decay_norms = False
  c.optim.lr_mults = (("^backbone/", 0.1),)
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.9
  c.optim.end_lr = 0.0
  c.optim.grad_clip = 0.01
  c.optim.layer_decay_rate = 1.0
  c.train.batch_size = 16
  c.train.num_steps = 160_000
  c.train.eval_every = 16_000
  c.train.checkpoint_every = 16_000
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c


def get_config():
  return maskformer_ade20k({"name": "resnet50_v1b", "norm_eval": True})
