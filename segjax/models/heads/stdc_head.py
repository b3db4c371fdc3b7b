"""STDC's detail head (Fan et al. 2021; mmseg's STDCHead): an FCN head on the backbone's 1/8
map that predicts edge / no edge, supervised during training only by the detail ground truth
that the `detail_bce` and `detail_dice` losses (segjax.losses) derive from the labels with
Laplacian convolutions at strides 1, 2 and 4. It guides the shallow stages to encode spatial
detail; at inference it is not run.

Its two output channels do not depend on the dataset's classes (mmseg's config sets
num_classes=2 for it); the `num_classes` the model builder passes is not used.
"""
from segjax.models.heads.fcn_head import FCNHead
from segjax.models.registry import HEADS


class STDCHead(FCNHead):
  channels: int = 64
  num_convs: int = 1
  concat_input: bool = False
  detail_classes: int = 2  # edge, no edge (mmseg: num_classes=2, sigmoid per channel)

  def outputs(self) -> int:
    return self.detail_classes


HEADS.register("stdc_head", STDCHead)
