"""mmsegmentation 1.x checkpoints and ImageNet ResNets -> segjax parameters.

segjax's CNN models name their submodules like mmseg's module tree (`backbone.layer1.0.conv1`
is `backbone/layer1_0/conv1`, `decode_head.bottleneck.bn` is `decode_head/bottleneck/bn`),
so the conversion is torch_layout's generic rule plus the renames below.
"""
from typing import Dict

import numpy as np

from segjax.convert import torch_layout

# mmseg writes a single auxiliary head as `auxiliary_head.*`, a list as `auxiliary_head.0.*`;
# segjax always holds a tuple. mmcv's Scale (DANet's and CCNet's `gamma`) holds its one
# scalar parameter as `scale`: renamed to `weight`, it lands on layers.Scale's "scale" by the
# generic rule for norm-like weights.
MMSEG_RENAMES = ((r"^auxiliary_head\.(?!\d+\.)", "auxiliary_head.0."),
                 (r"\.gamma\.scale$", ".gamma.weight"))

# ANN's APNB shares one projection for keys and queries; PyTorch's state dict lists that module
# under both names, segjax holds it once, as `key_project`.
MMSEG_DROPPED = (r".*\.num_batches_tracked",
                 r"decode_head\.context\.stages\.\d+\.query_project\..*")

# ImageNet classification checkpoints: the backbone without its classifier.
IMAGENET_DROPPED = (r".*\.num_batches_tracked", r"fc\.(weight|bias)", r"head\..*")


def convert_mmseg(state_dict: Dict[str, np.ndarray], source: str) -> Dict[str, np.ndarray]:
  """A whole mmseg segmentor (`{"meta", "state_dict"}["state_dict"]`)."""
  return torch_layout.convert_by_name(state_dict, source, MMSEG_RENAMES, MMSEG_DROPPED)


def convert_imagenet_resnet(state_dict: Dict[str, np.ndarray], source: str
                            ) -> Dict[str, np.ndarray]:
  """torchvision `resnet50-*.pth` (V1b) or open-mmlab `resnet50_v1c-*.pth` (V1c, deep stem
  `stem.*`): the same names as mmseg's backbone, without the `backbone.` prefix."""
  renames = ((r"^backbone\.", ""), (r"^", "backbone."))
  return torch_layout.convert_by_name(state_dict, source, renames, IMAGENET_DROPPED)
