"""DeepLab v1 LargeFOV (Chen et al., ICLR 2015) on VGG-16, PASCAL VOC 2012 + SBD, without the
fully connected CRF.

`deeplab_v1` (segjax/models/heads/largefov_head.py): VGG-16 with pool4/pool5 at stride 1 and
conv5 dilated 2, pool5a, fc6 3x3 at rate 12 with 1024 channels, fc7 1024, fc8; output
stride 8, logits interpolated onto the pixels as the reference's Interp. The recipe is the
paper's §4 / DeepLab-LargeFOV solver: SGD momentum 0.9, weight decay 5e-4, lr 1e-3 (fc8 at
x10, its bias x20; every bias x2 without decay), multiplied by 0.1 every 2000 iterations
(`optim.lr_step_size`), 6000 iterations of 20 images, 321x321 random crops with mirroring,
no rescaling. Departures: the loss reads the logits upsampled to every labelled pixel
(the reference subsamples the labels to the 41x41 cells); inputs are normalised with
torchvision's ImageNet mean/std (the weights' own), not Caffe's BGR mean; training uses
mmseg's 10,582-image VOC+SBD set. Target: 62.25 mIoU on VOC 2012 val before the CRF
(the paper's DeepLab-LargeFOV; 67.64 with it), not a segjax measurement.

Initialise from torchvision's ImageNet VGG-16; fc6 / fc7 are filled by subsampling VGG's
(see segjax/convert/torchvision_vgg.py):

  python -m segjax.convert --format=torchvision_vgg --input=vgg16-397923af.pth \\
      --config=configs/deeplabv1_vgg16_largefov_voc.py --output=weights/vgg16_largefov
  python -m segjax.main --config=configs/deeplabv1_vgg16_largefov_voc.py \\
      --workdir=runs/deeplabv1_voc --config.init_from=weights/vgg16_largefov \\
      --config.data.root=data/voc_aug
"""
import ml_collections

from configs import common

# fc8 (the classifier) at lr x10, its bias x20 (the prototxt's lr_mult 10 / 20).
CLASSIFIER_LR = (("^decode_head/fc8/kernel", 10.0), ("^decode_head/fc8/bias", 20.0))
LARGEFOV_VGG16 = {"name": "vgg16",
                  "pools": ((3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)),
                  "dilations": (1, 1, 1, 1, 2)}


def deeplab_recipe(model: ml_collections.ConfigDict, num_steps: int = 6000,
                   lr_mults=CLASSIFIER_LR) -> ml_collections.ConfigDict:
  """DeepLab v1's solver and data (see the module docstring) around `model`."""
  c = common.caffe_voc(model, crop_size=(321, 321), batch_size=20, num_steps=num_steps,
                       lr=1e-3, momentum=0.9, weight_decay=5e-4, flip=True,
                       lr_mults=lr_mults)
  c.optim.lr_step_size = 2000
  c.optim.lr_step_gamma = 0.1
  return c


def get_config():
  model = ml_collections.ConfigDict({
      "name": "deeplab_v1", "dtype": "float32", "backbone": LARGEFOV_VGG16,
      "decode_head": {"channels": 1024, "fc_kernel": 3, "dilation": 12, "avg_pool": True,
                      "dropout": 0.5}})
  return deeplab_recipe(model)
