"""The basic context module (Yu & Koltun, ICLR 2016: C channels in every layer, 64 C^2
weights) on the VGG-16 dilation front end, PASCAL VOC 2012 + SBD.

Everything else, recipe, departures and targets, as configs/context_vgg16_large_voc.py.

  python -m segjax.main --config=configs/context_vgg16_basic_voc.py \\
      --workdir=runs/context_basic_voc --config.init_from=weights/vgg16_dilation \\
      --config.data.root=data/voc_aug
"""
from configs import context_vgg16_large_voc


def get_config():
  return context_vgg16_large_voc.context_config("basic")
