"""FCN-8s "at-once" (Shelhamer, Long & Darrell, PAMI 2016) on VGG-16, PASCAL VOC 2012 + SBD:
the reference's voc-fcn8s-atonce.

`fcn8s`: pool4 and pool3 skips (zero-initialised scores) fused through fixed bilinear x2
upsamplings, then x8 to the pixels. This is the all-at-once variant: trained in one run from
ImageNet VGG-16 with the skips scaled by 0.01 (pool4) and 0.0001 (pool3) before scoring
(net.py's fixed Scale layers, "to better condition optimization"), SGD momentum 0.99, lr
1e-10 on the summed loss, weight decay 5e-4, 300k iterations of one image (solver.prototxt).
The staged voc-fcn8s (from FCN-16s at lr 1e-14, unscaled skips) is this config with
`--config.model.decode_head.skip_scales="(1.0, 1.0)" --config.optim.lr=1.875e-9`
and init_from an fcn16s run. See configs/fcn32s_vgg16_voc.py for the translation of the
summed loss to segjax's average and the other departures. Target: 65.4 mIoU on seg11valid
(the reference's README for voc-fcn8s-atonce; the CVPR 2015 FCN-8s: 62.2 on VOC 2012
test), not a segjax measurement.

  python -m segjax.convert --format=torchvision_vgg --input=vgg16-397923af.pth \\
      --config=configs/fcn8s_vgg16_voc.py --output=weights/vgg16_fcn8s
  python -m segjax.main --config=configs/fcn8s_vgg16_voc.py --workdir=runs/fcn8s_vgg16_voc \\
      --config.init_from=weights/vgg16_fcn8s --config.data.root=data/voc_aug
"""
from configs import fcn32s_vgg16_voc


def get_config():
  return fcn32s_vgg16_voc.fcn_recipe(8, caffe_lr=1e-10, num_steps=300_000,
                                     skip_scales=(0.01, 0.0001))
