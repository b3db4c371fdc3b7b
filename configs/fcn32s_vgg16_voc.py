"""FCN-32s (Long et al. 2015) on VGG-16, PASCAL VOC 2012 + SBD: the reference's voc-fcn32s.

The model is `fcn32s` (segjax/models/heads/fcn_skip_head.py): VGG-16, fc6 7x7 / fc7 as
convolutions, zero-initialised score_fr and one fixed bilinear x32 upsampling, logits on the
input pixels. The recipe is github.com/shelhamer/fcn.berkeleyvision.org voc-fcn32s
(solver.prototxt, net.py): fine-tuned from ImageNet VGG-16, one whole image per batch,
no augmentation, SGD with momentum 0.99, weight decay 5e-4, fixed lr 1e-10 on the *summed*
(unnormalised) pixel loss, 100k iterations, upsampling frozen (lr_mult 0), biases at lr x2
without decay. segjax averages the loss over labelled pixels, so the same steps take
lr = 1e-10 * N and weight decay 5e-4 / N for N labelled pixels per image; N = 500 * 375 (a
typical VOC image) gives lr 1.875e-5 and a decay of 2.7e-9, i.e. practically none, as in the
reference. Departures: images are padded to 512x512 crops (padding ignored by the loss) so
batches have one shape; training uses mmseg's 10,582-image VOC+SBD set (the reference SBD
train, 8,498); evaluation is on VOC 2012 val (1,449). Target: 63.6 mIoU on seg11valid
(the reference's README; VOC 2011 val minus SBD train), not a segjax measurement.

Initialise from torchvision's ImageNet VGG-16 (fc6 / fc7 included):

  python -m segjax.convert --format=torchvision_vgg --input=vgg16-397923af.pth \\
      --config=configs/fcn32s_vgg16_voc.py --output=weights/vgg16_fcn32s
  python -m segjax.main --config=configs/fcn32s_vgg16_voc.py --workdir=runs/fcn32s_vgg16_voc \\
      --config.init_from=weights/vgg16_fcn32s --config.data.root=data/voc_aug

The global batch is 1, as the reference; on N devices pass --config.train.batch_size=N.
"""
import ml_collections

from configs import common

TYPICAL_PIXELS = 500 * 375  # labelled pixels of a VOC image: the unnormalised loss's scale
FROZEN_UPSAMPLING = (("upscore", 0.0),)  # every Deconvolution: lr_mult 0 in net.py


def fcn_model(upsample: int, **head) -> ml_collections.ConfigDict:
  """`fcn{upsample}s`: VGG-16 and the FCN head (fc6 / fc7 4096 wide, dropout 0.5)."""
  return ml_collections.ConfigDict({
      "name": f"fcn{upsample}s", "dtype": "float32", "backbone": {"name": "vgg16"},
      "decode_head": {"channels": 4096, "dropout": 0.5, **head}})


def fcn_recipe(upsample: int, caffe_lr: float, num_steps: int, **head
               ) -> ml_collections.ConfigDict:
  """The reference's solver for an unnormalised loss at lr `caffe_lr`, for segjax's mean."""
  return common.caffe_voc(fcn_model(upsample, **head), crop_size=(512, 512), batch_size=1,
                          num_steps=num_steps, lr=caffe_lr * TYPICAL_PIXELS, momentum=0.99,
                          weight_decay=5e-4 / TYPICAL_PIXELS, flip=False,
                          lr_mults=FROZEN_UPSAMPLING)


def get_config():
  return fcn_recipe(32, caffe_lr=1e-10, num_steps=100_000)
