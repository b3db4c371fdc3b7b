"""mmsegmentation 1.x checkpoints and ImageNet ResNets -> segjax parameters.

segjax's CNN models name their submodules like mmseg's module tree (`backbone.layer1.0.conv1`
is `backbone/layer1_0/conv1`, `decode_head.bottleneck.bn` is `decode_head/bottleneck/bn`),
so the conversion is torch_layout's generic rule plus the renames below.
"""
import re
from typing import Dict

import numpy as np

from segjax.convert import hf_swin, torch_layout

# mmseg writes a single auxiliary head as `auxiliary_head.*`, a list as `auxiliary_head.0.*`;
# segjax always holds a tuple. mmcv's Scale (DANet's and CCNet's `gamma`) holds its one
# scalar parameter as `scale`: renamed to `weight`, it lands on layers.Scale's "scale" by the
# generic rule for norm-like weights.
MMSEG_RENAMES = ((r"^auxiliary_head\.(?!\d+\.)", "auxiliary_head.0."),
                 (r"\.gamma\.scale$", ".gamma.weight"),
                 # torch's nn.MultiheadAttention keeps its packed q|k|v projection as bare
                 # `in_proj_weight` / `in_proj_bias`; segjax's ViT keeps it packed too, as
                 # a Dense `in_proj` (transposed by the generic linear rule).
                 (r"\.in_proj_(weight|bias)$", r".in_proj.\1"))

# Bare nn.Parameters (no weight/bias leaf) copied as they are: ViT's cls_token and pos_embed
# (1, N, D), Segmenter's class embeddings cls_emb (1, K, D); and PReLU slopes (C,), kept as
# `weight` by layers.PReLU (the generic rule would make a 1-D weight a norm's `scale`): a
# ConvModule's `activate` and CGNet's `norm_prelu_{i}.1`.
MMSEG_RAW = (r"backbone\.(cls_token|pos_embed)", r"decode_head\.cls_emb", r".*\.activate\.weight",
             r"backbone\.norm_prelu_\d+\.1\.weight")

# ANN's APNB shares one projection for keys and queries; PyTorch's state dict lists that module
# under both names, segjax holds it once, as `key_project`. STDCHead keeps the constants of
# its detail ground truth (the Laplacian and the fusion weights), which segjax.losses holds.
MMSEG_DROPPED = (r".*\.num_batches_tracked",
                 r"decode_head\.context\.stages\.\d+\.query_project\..*",
                 r"auxiliary_head\.(\d+\.)?(laplacian_kernel|fusion_kernel)")

# ImageNet classification checkpoints: the backbone without its classifier.
IMAGENET_DROPPED = (r".*\.num_batches_tracked", r"fc\.(weight|bias)", r"head\..*")


def convert_mmseg(state_dict: Dict[str, np.ndarray], source: str) -> Dict[str, np.ndarray]:
  """A whole mmseg segmentor (`{"meta", "state_dict"}["state_dict"]`)."""
  backbone = {}
  if hf_swin.is_mmseg_swin(state_dict):
    # mmseg's SwinTransformer: its backbone goes through HF's names and layouts (fused qkv
    # split, patch-merging channel order), which segjax's swin uses; the heads as usual.
    state_dict, backbone = hf_swin.from_mmseg(state_dict, source)
  raw = {k: v for k, v in state_dict.items() if any(re.fullmatch(p, k) for p in MMSEG_RAW)}
  state_dict = {k: v for k, v in state_dict.items() if k not in raw}
  return {**torch_layout.convert_by_name(state_dict, source, MMSEG_RENAMES, MMSEG_DROPPED),
          **backbone,
          **{f"params/{torch_layout.module_path(k)}": np.asarray(v, np.float32)
             for k, v in raw.items()}}


def convert_imagenet_resnet(state_dict: Dict[str, np.ndarray], source: str
                            ) -> Dict[str, np.ndarray]:
  """torchvision `resnet50-*.pth` (V1b) or open-mmlab `resnet50_v1c-*.pth` (V1c, deep stem
  `stem.*`): the same names as mmseg's backbone, without the `backbone.` prefix."""
  renames = ((r"^backbone\.", ""), (r"^", "backbone."))
  return torch_layout.convert_by_name(state_dict, source, renames, IMAGENET_DROPPED)
