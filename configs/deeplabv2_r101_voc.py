"""DeepLab v2 (Chen et al., TPAMI 2017): ResNet-101 + ASPP-L with multi-scale inputs (1, 0.75,
0.5, max fusion), PASCAL VOC 2012 + SBD (10,582 images), the paper's recipe.

Model (segjax/models/deeplab_v2.py): ResNet-101 at output stride 8 (stages 3 / 4 dilated 2 / 4
in every block, as the Caffe model), ASPP-L (four 3x3 classifiers at rates 6 / 12 / 18 / 24,
summed), BatchNorm frozen (statistics and affine parameters, as the official model's
use_global_stats and lr_mult 0); loss on each scale's output and on the fused one, weight 1
each. Schedule (the official solver and kazuto1011/deeplab-pytorch configs/voc12.yaml): SGD lr
2.5e-4, classifier weights x10, classifier biases x20 without weight decay, momentum 0.9,
weight decay 5e-4, poly 0.9 to 0, batch 10 (kazuto: 5 x iter_size 2), 20k steps; 321x321
crops (padded with the ignore label) of images randomly scaled by 0.5-1.5 (data.base_size
500x500 holds VOC's images at their size at ratio 1), horizontal flips, no photometric
distortion, no cat_max_ratio; whole-image test at the original size.

Target: 76.35 mIoU on VOC 2012 val without CRF (77.69 with), the paper's ResNet-101 row with
MSC + COCO + Aug + ASPP-L. Departures: the paper starts from an MS-COCO-trained model, segjax
from torchvision's ImageNet ResNet-101 (V1b: the stride in the 3x3 conv, not the 1x1 of the
Caffe ResNet; normalised by ImageNet mean/std, not Caffe's BGR mean), so expect less; the
losses upsample each output to the labels where the paper shrinks the labels to each output;
no DenseCRF. Weights:

  python -m segjax.convert --format=torchvision_resnet --input=resnet101-63fe2227.pth \\
      --output=weights/r101_tv --config=configs/deeplabv2_r101_voc.py
  python -m segjax.main --config=configs/deeplabv2_r101_voc.py --workdir=runs/deeplabv2_voc \\
      --config.data.root=data/voc_aug --config.init_from=weights/r101_tv
"""
import ml_collections

from configs import common

# The official lr_mult / decay_mult: BatchNorm frozen, the classifier's weights x10 and its
# biases x20 without decay (first match wins).
LR_MULTS = ((r"^backbone/(.*/)?(bn\d|downsample_1)/", 0.0), (r"^decode_head/.*/bias$", 20.0),
            (r"^decode_head/", 10.0))


def get_config():
  c = common.voc_aug_config()
  c.data.base_size = (500, 500)
  c.data.ratio_range = (0.5, 1.5)
  c.data.crop_size = (321, 321)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  backbone = common.dilated_resnet(101, 8, name="resnet101_v1b", contract_dilation=False,
                                   norm_eval=True)
  model = ml_collections.ConfigDict({
      "name": "deeplab_v2", "dtype": "float32", "backbone": backbone,
      "decode_head": {"name": "aspp_l_head", "dilations": (6, 12, 18, 24)},
      "scales": (1.0, 0.75, 0.5)})
  c = common.cnn_recipe(c, model, num_steps=20_000)
  c.optim.lr = 2.5e-4
  c.optim.end_lr = 0.0
  c.optim.lr_mults = LR_MULTS
  c.optim.no_decay = (r"^decode_head/.*/bias$",)
  c.train.batch_size = 10
  c.eval.scale = (500, 500)
  return c
