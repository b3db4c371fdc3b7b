"""FCN-16s (Long et al. 2015) on VGG-16, PASCAL VOC 2012 + SBD: the reference's voc-fcn16s.

`fcn16s`: FCN-32s plus the pool4 skip (zero-initialised score_pool4, fused after a fixed
bilinear x2, then x16 to the pixels). The reference trains it in stages: voc-fcn16s is
fine-tuned from the trained FCN-32s (solve.py) with the solver of FCN-32s at lr 1e-12 (on
the summed loss), 100k iterations; see configs/fcn32s_vgg16_voc.py for the translation to
segjax's averaged loss and the other departures. Target: 65.0 mIoU on seg11valid (the
reference's README), not a segjax measurement.

  python -m segjax.main --config=configs/fcn16s_vgg16_voc.py --workdir=runs/fcn16s_vgg16_voc \\
      --config.init_from=runs/fcn32s_vgg16_voc --config.data.root=data/voc_aug

(init_from a trained fcn32s run: its parameters are a subset of these; score_pool4 and
upscore16 start fresh, at zero and bilinear.)
"""
from configs import fcn32s_vgg16_voc


def get_config():
  return fcn32s_vgg16_voc.fcn_recipe(16, caffe_lr=1e-12, num_steps=100_000)
