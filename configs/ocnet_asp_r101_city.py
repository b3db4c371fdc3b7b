"""OCNet with the ASP-OC head (DeepLabv3's ASPP, rates 12 / 24 / 36, with object context, on a
2x2-pooled map, in place of image pooling) on a dilated ResNet-101, Cityscapes: the recipe,
targets and departures of configs/ocnet_base_r101_city.py with `oc_type="asp"` (dropout 0.1).

  python -m segjax.main --config=configs/ocnet_asp_r101_city.py --workdir=runs/ocnet_asp \\
      --config.data.root=data/cityscapes --config.init_from=weights/r101_tv
"""
from configs import ocnet_base_r101_city


def get_config():
  return ocnet_base_r101_city.get_config("asp")
