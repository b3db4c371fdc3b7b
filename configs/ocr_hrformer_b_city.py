"""OCRNet on HRFormer-B: configs/ocr_hrformer_s_city.py with the base backbone (streams 78,
156, 312, 624 wide, 2-16 heads; 1170 channels concatenated) and drop path 0.4.

The official recipe: github.com/HRNet/HRFormer seg/scripts/cityscapes/hrt/
run_hrt_base_ocr_v2_ohem.sh (HRT_BASE_OCR_V2, `export drop_path_rate=0.4`), otherwise as for
HRFormer-S (see that config for the recipe and the known differences).

Target: 81.4 mIoU single-scale (82.0 multi-scale + flip), Cityscapes val: the official
repository's Cityscapes table (README.md, "OCRNet | HRFormer-B | 7x7"), not a segjax
measurement.

  python -m segjax.convert --format=hrformer_official --input=hrt_base.pth \\
      --config=configs/ocr_hrformer_b_city.py --output=pretrained/hrformer_b
  python -m segjax.main --config=configs/ocr_hrformer_b_city.py --workdir=runs/ocr_hrformer_b \\
      --config.data.root=data/cityscapes --config.init_from=pretrained/hrformer_b
"""
from configs import ocr_hrformer_s_city


def get_config():
  return ocr_hrformer_s_city.get_config("b")
