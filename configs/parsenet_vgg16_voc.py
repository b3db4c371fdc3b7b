"""ParseNet (Liu, Rabinovich & Berg, ICLR 2016 workshop) on VGG-16, PASCAL VOC 2012 + SBD.

`parsenet` (segjax/models/heads/parsenet_head.py): the DeepLab-LargeFOV VGG-16 (output
stride 8, fc6 3x3 at rate 12, 1024 channels), and fc7's global average appended to every
location, both L2-normalised with learned per-channel scales starting at 10, then a 1x1
classifier. The authors' solver for VOC (Caffe Model Zoo) could not be read here. This
config trains it with the DeepLab v1 recipe of its base network (SGD momentum 0.9, weight
decay 5e-4, lr 1e-3 with the classifier at x10 / x20, batch 20, 321x321 crops with
mirroring; see configs/deeplabv1_vgg16_largefov_voc.py) but the "poly" policy (power 0.9),
which DeepLab v2 credits to ParseNet, over 20k steps (this config's choice). Target: 69.8
mIoU on VOC 2012 test (the paper's ParseNet), not a segjax measurement.

  python -m segjax.convert --format=torchvision_vgg --input=vgg16-397923af.pth \\
      --config=configs/parsenet_vgg16_voc.py --output=weights/vgg16_parsenet
  python -m segjax.main --config=configs/parsenet_vgg16_voc.py --workdir=runs/parsenet_voc \\
      --config.init_from=weights/vgg16_parsenet --config.data.root=data/voc_aug
"""
import ml_collections

from configs import deeplabv1_vgg16_largefov_voc as deeplab

CLASSIFIER_LR = (("^decode_head/score/kernel", 10.0), ("^decode_head/score/bias", 20.0))


def get_config():
  model = ml_collections.ConfigDict({
      "name": "parsenet", "dtype": "float32", "backbone": deeplab.LARGEFOV_VGG16,
      "decode_head": {"channels": 1024, "fc_kernel": 3, "dilation": 12, "avg_pool": False,
                      "dropout": 0.5, "scale_init": 10.0}})
  c = deeplab.deeplab_recipe(model, num_steps=20_000, lr_mults=CLASSIFIER_LR)
  c.optim.lr_step_size = 0  # poly instead of steps
  c.optim.poly_power = 0.9
  return c
