"""SETR-PUP (progressive upsampling; Zheng et al., CVPR 2021) on ViT-L/16, Cityscapes
768x768, 80k steps.

Mirrors mmseg 1.2.2 `configs/setr/setr_vit-l_pup_8xb1-80k_cityscapes-768x768.py`: ViT-L as
SETR-Naive (layers 10, 15, 20, 24; bilinear position-embedding resize), decode head on the
last layer with four 3x3 ConvBNActs of 256 channels each followed by x2 bilinear (logits at
full resolution), and three auxiliary heads on the others (two 3x3 ConvBNActs, each x4, as
the Cityscapes file overrides them; weight 0.4 each). SGD lr 0.01, heads x10, batch 8,
sliding-window test 768/512 (`common.setr_cityscapes`).
Reference mIoU 79.21 single-scale (mmseg's model-zoo figure, not a segjax measurement), from
ImageNet-21k ViT-L/16 weights.

  python -m segjax.main --config=configs/setr_pup_vitl_city.py --workdir=runs/setr_pup \\
      --config.data.root=data/cityscapes --config.init_from=weights/vit_l16
"""
from configs import common


def up_head(in_index: int, num_convs: int, up_scale: int, loss_weight=None) -> dict:
  head = {"name": "setr_up_head", "in_index": in_index, "channels": 256,
          "num_convs": num_convs, "up_scale": up_scale, "kernel_size": 3, "dropout": 0.0}
  return head if loss_weight is None else {**head, "loss_weight": loss_weight}


def get_config():
  return common.setr_cityscapes(common.encoder_decoder(
      backbone=common.vit_backbone("large", (768, 768), out_indices=(9, 14, 19, 23),
                                   with_cls_token=True, interpolate_mode="bilinear"),
      decode_head=up_head(3, num_convs=4, up_scale=2),
      auxiliary_head=[up_head(i, num_convs=2, up_scale=4, loss_weight=0.4) for i in range(3)]))
