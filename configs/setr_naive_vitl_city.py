"""SETR-Naive (Zheng et al., CVPR 2021) on ViT-L/16, Cityscapes 768x768, 80k steps.

Mirrors mmseg 1.2.2 `configs/setr/setr_vit-l_naive_8xb1-80k_cityscapes-768x768.py`: ViT-L
(position embedding learnt at 768x768, resized bilinearly, cls token, no final norm, no
dropout), the tokens of layers 10, 15, 20 and 24 (out_indices 9, 14, 19, 23); decode head on
the last (LayerNorm, one 1x1 ConvBNAct of 256 channels, x4 bilinear, no dropout) and the same
head as auxiliary on the other three (weight 0.4 each). SGD lr 0.01, heads x10, batch 8,
sliding-window test 768/512 (`common.setr_cityscapes`).
Reference mIoU 78.10 single-scale (mmseg's model-zoo figure, not a segjax measurement), from
ImageNet-21k ViT-L/16 weights (`--format=big_vision_vit` converts the AugReg .npz).

  python -m segjax.main --config=configs/setr_naive_vitl_city.py --workdir=runs/setr_naive \\
      --config.data.root=data/cityscapes --config.init_from=weights/vit_l16
"""
from configs import common


def up_head(in_index: int, loss_weight=None) -> dict:
  head = {"name": "setr_up_head", "in_index": in_index, "channels": 256, "num_convs": 1,
          "up_scale": 4, "kernel_size": 1, "dropout": 0.0}
  return head if loss_weight is None else {**head, "loss_weight": loss_weight}


def get_config():
  return common.setr_cityscapes(common.encoder_decoder(
      backbone=common.vit_backbone("large", (768, 768), out_indices=(9, 14, 19, 23),
                                   with_cls_token=True, interpolate_mode="bilinear"),
      decode_head=up_head(3),
      auxiliary_head=[up_head(i, 0.4) for i in range(3)]))
