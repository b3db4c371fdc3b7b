"""BiSeNet V2 (Yu et al. 2021), Cityscapes 1024x1024, 160k steps, from scratch.

Mirrors mmseg 1.2.2 `configs/bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py`:
detail branch 64/64/128, semantic branch 16/32/64/128 (expansion 6), guided aggregation at
128 channels; FCN decode head (one 3x3 ConvBNAct of 1024) on the aggregated 1/8 map and the
paper's "booster": four FCN auxiliary heads (two 3x3 ConvBNActs each, 16/64/256/1024
channels, loss weight 1.0) on the stem and the three gather-and-expand stages. 1024x1024
crops, global batch 16, SGD lr 0.05 (warmup 1000 steps from x0.1, then poly 0.9 to 1e-4).
Reference mIoU 73.21 single-scale (mmseg's model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/bisenetv2_fcn_city.py --workdir=runs/bisenetv2 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config():
  booster = [{**common.aux_fcn_head(in_index=i, channels=channels, loss_weight=1.0),
              "num_convs": 2}
             for i, channels in enumerate((16, 64, 256, 1024), start=1)]
  return common.realtime_cityscapes(
      common.encoder_decoder(
          backbone={"name": "bisenetv2", "detail_channels": (64, 64, 128),
                    "semantic_channels": (16, 32, 64, 128), "semantic_expansion_ratio": 6,
                    "bga_channels": 128},
          decode_head={"name": "fcn_head", "in_index": 0, "channels": 1024, "num_convs": 1,
                       "concat_input": False, "dropout": 0.1},
          auxiliary_head=booster),
      crop_size=(1024, 1024), batch_size=16, num_steps=160_000, lr=0.05)
