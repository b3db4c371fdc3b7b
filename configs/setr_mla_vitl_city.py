"""SETR-MLA (multi-level feature aggregation; Zheng et al., CVPR 2021) on ViT-L/16,
Cityscapes 768x768, 80k steps.

Mirrors mmseg 1.2.2 `configs/setr/setr_vit-l_mla_8xb1-80k_cityscapes-768x768.py`: ViT-L
without the cls token (it only carries its position embedding in; bilinear resize), layers
6, 12, 18 and 24 (out_indices 5, 11, 17, 23) -> MLA neck (LayerNorms, 1x1 then 3x3
ConvBNActs of 256 channels, top-down sums) -> MLA head (two 3x3 ConvBNActs of 128 channels
and x4 per level, concatenated: 512 channels); four auxiliary 1x1 classifiers (FCNHead with
num_convs=0) on the neck's maps, weight 0.4 each. SGD lr 0.002 (this file's), heads x10,
batch 8, sliding-window test 768/512 (`common.setr_cityscapes`).
Reference mIoU 77.00 single-scale (mmseg's model-zoo figure, not a segjax measurement), from
ImageNet-21k ViT-L/16 weights.

  python -m segjax.main --config=configs/setr_mla_vitl_city.py --workdir=runs/setr_mla \\
      --config.data.root=data/cityscapes --config.init_from=weights/vit_l16
"""
from configs import common


def get_config():
  return common.setr_cityscapes(common.encoder_decoder(
      backbone=common.vit_backbone("large", (768, 768), out_indices=(5, 11, 17, 23),
                                   with_cls_token=False, interpolate_mode="bilinear"),
      neck={"name": "mla", "out_channels": 256},
      decode_head={"name": "setr_mla_head", "in_index": (0, 1, 2, 3), "mla_channels": 128,
                   "up_scale": 4, "dropout": 0.0},
      auxiliary_head=[{"name": "fcn_head", "in_index": i, "channels": 256, "num_convs": 0,
                       "kernel_size": 1, "concat_input": False, "dropout": 0.0,
                       "loss_weight": 0.4} for i in range(4)]), lr=0.002)
