"""OCNet with the pyramid-OC head (object context inside each cell of 1x1, 2x2, 3x3 and 6x6
partitions of the stride-8 map) on a dilated ResNet-101, Cityscapes: the recipe, targets and
departures of configs/ocnet_base_r101_city.py with `oc_type="pyramid"`.

  python -m segjax.main --config=configs/ocnet_pyramid_r101_city.py --workdir=runs/ocnet_pyramid \\
      --config.data.root=data/cityscapes --config.init_from=weights/r101_tv
"""
from configs import ocnet_base_r101_city


def get_config():
  return ocnet_base_r101_city.get_config("pyramid")
