"""The large context module (Yu & Koltun, ICLR 2016) on the VGG-16 dilation front end,
PASCAL VOC 2012 + SBD.

`context_module` (segjax/models/heads/context_head.py): VGG-16 without pool4/pool5, conv5
dilated 2, fc6 7x7 at dilation 4, fc7, `final` (21 class maps, stride 8), then the context
module: seven 3x3 convs at dilations 1, 1, 2, 4, 8, 16, 1 widening to 32C, and a 1x1 back to
C, identity-initialised so training starts from the front end's output; logits upsampled
bilinearly onto the pixels (the reference's fixed deconvolution).

The paper trains in stages (front end; context module on the front end's frozen outputs;
jointly). One segjax run cannot chain them, so this config trains everything at once from
ImageNet VGG-16 with the front-end solver of github.com/fyu/dilation train.py (SGD
momentum 0.9, weight decay 5e-4, "step" policy x0.1 every 100k iterations, lr 1e-4 for the
front end; biases x2 without decay as every layer of network.py) and docs/training.md's VOC
front-end example (batch 14, mirrored 500x500 crops); with the identity initialisation this
is what docs/training.md suggests for small datasets ("joint training directly with
identity initialization for context module"). 60k steps is this config's choice (train.py
sets max_iter 400k with its steps every 100k; the docs give no VOC iteration count). The
reference's crops are 500x500 *including* a 186-pixel reflected margin (a 128x128 labelled
centre); here the convs are zero-padded and the whole crop is labelled. Target: the paper
reports its front end at 67.6 mIoU on VOC 2012 test when trained on VOC + SBD;
its context-module numbers were trained with COCO images added, which this
config does not use. Not segjax measurements.

  python -m segjax.convert --format=torchvision_vgg --input=vgg16-397923af.pth \\
      --config=configs/context_vgg16_large_voc.py --output=weights/vgg16_dilation
  python -m segjax.main --config=configs/context_vgg16_large_voc.py \\
      --workdir=runs/context_large_voc --config.init_from=weights/vgg16_dilation \\
      --config.data.root=data/voc_aug
"""
import ml_collections

from configs import common

FRONT_END_VGG16 = {"name": "vgg16", "pools": ((2, 2, 0), (2, 2, 0), (2, 2, 0), None, None),
                   "dilations": (1, 1, 1, 1, 2)}


def context_config(variant: str) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict({
      "name": "context_module", "dtype": "float32", "backbone": FRONT_END_VGG16,
      "decode_head": {"variant": variant, "channels": 4096, "fc_kernel": 7, "dilation": 4,
                      "dropout": 0.5, "init_noise": 0.01}})
  c = common.caffe_voc(model, crop_size=(500, 500), batch_size=14, num_steps=60_000, lr=1e-4,
                       momentum=0.9, weight_decay=5e-4, flip=True)
  c.optim.lr_step_size = 100_000
  c.optim.lr_step_gamma = 0.1
  return c


def get_config():
  return context_config("large")
