"""DeconvNet (Noh, Hong and Han, ICCV 2015) with its VGG-16-BN convolution network on PASCAL
VOC 2012 + SBD (10,582 training images, 21 classes).

The authors' recipe (github.com/HyeonwooNoh/DeconvNet training/00{1,2}_stage_*/
solver.prototxt and stage_*_train.prototxt): SGD lr 0.01, momentum 0.9, weight decay 5e-4
(not on the score layer's bias, Caffe's weight_decay 0; every other layer is bias-free before
its BatchNorm), batches of 64 (8 images x iter_size 8), images resized to 250x250 then random
224x224 crops with horizontal flips, 60k steps (stage 1's 20k + stage 2's 40k); the
convolution network from ImageNet VGG-16 (torchvision's vgg16_bn through segjax.convert's
torchvision_vgg format into params/backbone/), the deconvolution network from scratch.

Departures, since segjax trains on whole images: the paper's two stages train on crops
around ground-truth objects (stage 1) and around object proposals (stage 2), and it infers
on 50 proposals per image merged by max (then ensembles with FCN-8s and a CRF). Here both
stages are one run on whole images, each resized to fit 250x250 keeping its aspect (Caffe
squashes to 250x250) and padded with the ignore value where a 224 crop overruns it; the test
image is predicted whole at that scale and scored at its own size. The step schedule
(x0.1 at 9k in stage 1, every 10k in stage 2) is mmseg's poly 0.9 (segjax's schedule), and
the mean/std are ImageNet's of the torchvision weights (Caffe subtracts a BGR mean only).

  python -m segjax.main --config=configs/deconvnet_vgg16_voc.py --workdir=runs/deconvnet_voc \\
      --config.data.root=data/voc_aug --config.init_from=/path/to/converted/vgg16_bn

Target: none reproduced in segjax. The authors' README gives 72.5 mIoU on VOC 2012 test for
EDeconvNet+CRF (proposal-based inference, ensembled with FCN-8s, CRF); whole-image inference
of the single network is not a number the paper reports.
"""
import ml_collections

from configs import common


def deconvnet_model(widths=(64, 128, 256, 512, 512), fc_width: int = 4096
                    ) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "deconvnet", "dtype": "float32", "widths": tuple(widths), "fc_width": fc_width,
      "loss": ({"name": "cross_entropy", "weight": 1.0},)})


def get_config():
  c = common.voc_aug_config()
  c.data.base_size = (250, 250)
  c.data.ratio_range = (1.0, 1.0)
  c.data.crop_size = (224, 224)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  c = common.cnn_recipe(c, deconvnet_model(), num_steps=60_000)
  c.optim.no_decay = ("seg_score/bias$",)
  c.train.batch_size = 64
  c.eval.crop_size = (224, 224)
  c.eval.stride = (149, 149)
  return c
