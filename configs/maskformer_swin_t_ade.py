"""MaskFormer (Cheng et al. 2021) on Swin-T (Liu et al. 2021), ADE20K 512x512, 160k steps.

Mirrors mmseg 1.2.2 `configs/maskformer/maskformer_swin-t_upernet_8xb2-160k_ade20k-512x512.py`:
maskformer_r50_ade's model and data with the backbone replaced by Swin-T (embed 96, depths
2/2/6/2, heads 3/6/12/24, window 7, drop_path 0.3, an out norm on each of the four maps) and
its own optimizer: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 except on the
backbone's LayerNorms, the relative position bias tables and the query embeddings (mmseg's
custom_keys; the heads' GroupNorms and LayerNorms ARE decayed), backbone at lr x1, gradient
norm clipped at 0.01, linear warmup over 1500 steps from 1e-6 x lr, then poly 1.0 to 0 at
160k; global batch 16; whole-image test at scale (2048, 512).

  python -m segjax.main --config=configs/maskformer_swin_t_ade.py --workdir=runs/maskformer_swin_t \
      --config.data.root=/path/to/ADEChallengeData2016 --config.init_from=/path/to/swin_t

(init_from: an ImageNet Swin-T converted with `python -m segjax.convert --format=hf_backbone
--input=swin-tiny-patch4-window7-224 --config=configs/maskformer_swin_t_ade.py --output=...`;
facebook/maskformer-swin-tiny-ade converts whole with --format=hf_maskformer.)

Target: 46.69 mIoU single scale, ADE20K val: mmseg 1.2.2's model zoo figure for this config
(the paper's Swin-T MaskFormer: 46.7). Not yet reproduced in segjax.
"""
from configs import maskformer_r50_ade


def get_config():
  c = maskformer_r50_ade.maskformer_ade20k({"name": "swin_tiny", "drop_path_rate": 0.3})
  c.optim.lr = 6e-5
  c.optim.weight_decay = 0.01
  c.optim.no_decay = ("^backbone/.*norm", "relative_position_bias_table", "queries_embedder")
  c.optim.no_decay_norms = False
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 1.0
  c.optim.end_lr = 0.0
  return c
