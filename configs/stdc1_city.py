"""STDC1 (Fan et al. 2021, "Rethinking BiSeNet"), Cityscapes 512x1024, 80k steps, from scratch.

Mirrors mmseg 1.2.2 `configs/stdc/stdc1_4xb12-80k_cityscapes-512x1024.py`: STDCNet1
(channels 32/64/256/512/1024, "cat" STDC modules of 4 convs) with the context path (ARMs and
a 128-channel top-down path) and the FFM (256 channels); FCN decode head (one 3x3 ConvBNAct
of 256) on the fused 1/8 map, upsampled with corners aligned as mmseg's (align_corners=True);
two FCN auxiliary heads (64 channels) on the context path's 1/8 and 1/16 maps; all three with
OHEM cross-entropy (thresh 0.7, at least 10000 pixels per image). The detail head
(`stdc_head`: 64 channels, 2 outputs, corners aligned) on STDCNet's 1/8 map learns the
Laplacian detail ground truth with BCE + Dice (`detail_bce`, `detail_dice`). Every auxiliary
loss weighs 1.0. 512x1024 crops, global batch 48, SGD lr 0.01 (warmup 1000 steps from x0.1,
then poly 0.9 to 1e-4). Reference mIoU 71.82 single-scale (mmseg's model zoo figure, not a
segjax measurement; the paper's 74.2 / 77.0 for STDC1/2-Seg75 use ImageNet-pretrained
STDCNets and 75% test scale).

  python -m segjax.main --config=configs/stdc1_city.py --workdir=runs/stdc1 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(stdc_type: str = "STDCNet1"):
  ohem = ({"name": "ohem_cross_entropy", "thresh": 0.7, "min_kept": 10_000},)
  fcn = {"name": "fcn_head", "num_convs": 1, "concat_input": False, "dropout": 0.1,
         "loss": ohem}
  return common.realtime_cityscapes(
      common.encoder_decoder(
          backbone={"name": "stdc_context_path",
                    "backbone_cfg": {"name": "stdcnet", "stdc_type": stdc_type,
                                     "channels": (32, 64, 256, 512, 1024), "num_convs": 4},
                    "out_channels": 128, "ffm_channels": 256, "ffm_scale_factor": 4},
          decode_head={**fcn, "in_index": 3, "channels": 256, "align_corners": True},
          auxiliary_head=[
              {**fcn, "in_index": 2, "channels": 64, "loss_weight": 1.0},
              {**fcn, "in_index": 1, "channels": 64, "loss_weight": 1.0},
              {"name": "stdc_head", "in_index": 0, "channels": 64, "num_convs": 1,
               "concat_input": False, "align_corners": True, "loss_weight": 1.0,
               "loss": ({"name": "detail_bce", "boundary_threshold": 0.1},
                        {"name": "detail_dice"})},
          ]),
      crop_size=(512, 1024), batch_size=48, num_steps=80_000, lr=0.01)
