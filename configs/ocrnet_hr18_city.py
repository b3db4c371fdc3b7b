"""OCRNet (Yuan et al. 2020) on HRNetV2-W18, Cityscapes 512x1024, 80k steps.

Mirrors mmseg 1.2.2 `configs/ocrnet/ocrnet_hr18_4xb2-80k_cityscapes-512x1024.py`: a cascade
of an FCN head (one 1x1 ConvBNAct over the four resized and concatenated HRNet maps, loss
weight 0.4) whose logits are the soft object regions of the OCR head (512 channels, object
attention at 256), no dropout, no auxiliary head. Reference mIoU 78.57 single-scale (mmseg's
model zoo figure, not a segjax measurement).

  python -m segjax.main --config=configs/ocrnet_hr18_city.py --workdir=runs/ocrnet_hr18 \\
      --config.data.root=data/cityscapes
"""
from configs import common


def get_config(width: int = 18):
  all_maps = {"in_index": (0, 1, 2, 3), "input_transform": "resize_concat", "dropout": 0.0}
  concat_width = sum(width * 2 ** i for i in range(4))  # mmseg's sum([18, 36, 72, 144])
  return common.cnn_cityscapes(common.encoder_decoder(
      backbone={"name": f"hrnetv2_w{width}"},
      decode_head=[
          {"name": "fcn_head", **all_maps, "channels": concat_width, "kernel_size": 1,
           "num_convs": 1, "concat_input": False, "loss_weight": 0.4},
          {"name": "ocr_head", **all_maps, "channels": 512, "ocr_channels": 256},
      ]))
