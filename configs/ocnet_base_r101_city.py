"""OCNet with the base object-context head (Yuan & Wang, arXiv 1809.00916) on a dilated
ResNet-101, Cityscapes, the official recipe (github.com/openseg-group/OCNet.pytorch
run_resnet101_base_oc.sh, train.py, dataset/cityscapes.py, utils/criterion.py).

Model (segjax/models/heads/oc_head.py): ResNet-101 at output stride 8 (stages 3 / 4 dilated
2 / 4 in every block), the OC head (`oc_type` base / pyramid / asp) and the stage-3
supervision `dsn` at loss weight 0.4; both losses are cross-entropy with the official
Cityscapes class weights. Schedule: SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every
parameter, poly 0.9 to 0, batch 8, 40k steps; 769x769 crops of frames randomly scaled by
0.5-2.1 (the official draws 0.5 + k/10, k = 0..16), horizontal flips, no photometric
distortion; whole-image single-scale test of the 1024x2048 frames.

Targets (official README, Cityscapes val, single scale, without OHEM): base-OC ~79.3,
ASP-OC ~79.5 mIoU; the README gives no pyramid-OC figure. Departures: the official backbone is
the CSAIL ResNet-101 (deep 3x3 stem 64-64-128, max pool with ceil mode, BN as InPlaceABNSync)
initialised from its resnet101-imagenet.pth with Caffe-style BGR mean subtraction; segjax uses
torchvision's ResNet-101 (V1b, 7x7 stem) and its ImageNet weights, normalised by ImageNet
mean/std. The heads equal the official ones (parameter counts and logits tested).

Memory: base-OC attends over all 1/8 positions; testing whole 1024x2048 frames forms a
32768 x 32768 attention matrix (4 GiB in float32) per image.

  python -m segjax.convert --format=torchvision_resnet --input=resnet101-63fe2227.pth \\
      --output=weights/r101_tv --config=configs/ocnet_base_r101_city.py
  python -m segjax.main --config=configs/ocnet_base_r101_city.py --workdir=runs/ocnet_base \\
      --config.data.root=data/cityscapes --config.init_from=weights/r101_tv
"""
import ml_collections

from configs import common

OC_DROPOUT = {"base": 0.05, "pyramid": 0.05, "asp": 0.1}  # the official networks' Dropout2d


def get_config(oc_type: str = "base"):
  """The recipe with the `oc_type` head (configs/ocnet_{pyramid,asp}_r101_city.py)."""
  loss = ({"name": "cross_entropy", "class_weight": "cityscapes"},)
  model = ml_collections.ConfigDict({
      "name": "ocnet", "dtype": "float32",
      "backbone": common.dilated_resnet(101, 8, name="resnet101_v1b", contract_dilation=False),
      "decode_head": {"name": "oc_head", "oc_type": oc_type, "channels": 512,
                      "dropout": OC_DROPOUT[oc_type], "loss": loss},
      "auxiliary_head": ({"name": "oc_dsn_head", "in_index": 2, "channels": 512,
                          "act": oc_type != "pyramid", "dropout": OC_DROPOUT[oc_type],
                          "loss": loss, "loss_weight": 0.4},)})
  c = common.cityscapes_config(crop_size=(769, 769))
  c.data.ratio_range = (0.5, 2.1)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  c.train.batch_size = 8
  c = common.cnn_recipe(c, model, num_steps=40_000)
  c.optim.end_lr = 0.0
  return c
