"""Official HRFormer checkpoints (github.com/HRNet/HRFormer) -> encoder-only segjax
checkpoints (--format=hrformer_official).

  python -m segjax.convert --format=hrformer_official --input=hrt_small.pth \\
      --config=configs/ocr_hrformer_s_city.py --output=DIR

PATH is the official ImageNet-pretrained backbone (`{"model": state_dict}`, what the
official segmentation scripts load as PRETRAINED_MODEL; its classification head is dropped)
or an official segmentation checkpoint (`{"state_dict": ...}`, keys `[module.]backbone.*`; its
openseg OCR head is dropped). CFG is the segjax config whose backbone the weights fill
(hrformer_small for hrt_small, hrformer_base for hrt_base); the heads stay fresh.

segjax's HRFormer names its modules like the official code, so this is torch_layout's rule
plus three steps: the FFN's 1x1 convs (`mlp.fc1`, `mlp.fc2`) become the linear layers they
are, the relative position bias tables are copied as they are ((2w-1)^2, heads), and the
relative position index buffers are dropped (segjax recomputes them).
"""
import re
from typing import Dict

import numpy as np

from segjax.convert import torch_layout
from segjax.errors import CheckpointError, ConfigError
from segjax.tools.config_file import load_config_file

DROPPED = (r".*\.num_batches_tracked", r".*\.relative_position_index",
           # the ImageNet classification head of the official cls/ code
           r"(incre_modules|downsamp_modules|final_layer|classifier)\..*")
# The openseg OCR head of an official segmentation checkpoint (HRT_*_OCR_V2 / V3).
SEG_HEAD = re.compile(r"(conv3x3|ocr_gather_head|ocr_distri_head|cls_head|aux_head)\.")
FFN_1X1 = re.compile(r".*\.mlp\.fc[12]\.weight")
TABLE = ".relative_position_bias_table"


def convert_backbone(state_dict: Dict[str, np.ndarray], source: str) -> Dict[str, np.ndarray]:
  """{"params/backbone/...", "batch_stats/backbone/...": array} of an official HRFormer."""
  backbone, tables = {}, {}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if key.startswith("backbone."):
      key = key[len("backbone."):]
    elif SEG_HEAD.match(key):
      continue
    value = np.asarray(value, np.float32)
    if FFN_1X1.fullmatch(key):
      if value.ndim != 4 or value.shape[2:] != (1, 1):
        raise CheckpointError(f"{source}: {key} should be a 1x1 conv, has shape {value.shape}")
      value = value[:, :, 0, 0]
    (tables if key.endswith(TABLE) else backbone)[key] = value
  flat = torch_layout.convert_by_name(backbone, source, renames=((r"^", "backbone."),),
                                      dropped=DROPPED)
  for key, value in tables.items():
    module = torch_layout.module_path(key[:-len(TABLE)])
    flat[f"params/backbone/{module}/relative_position_bias_table"] = value
  return flat


def _load(path: str) -> Dict[str, np.ndarray]:
  """The state dict under "model" (ImageNet), "state_dict" (segmentation) or a bare one."""
  try:
    return torch_layout.load_pth(path, "model")
  except CheckpointError:
    return torch_layout.load_pth(path, "state_dict")


def read(input_path: str, config):
  """The `READERS` entry of segjax.convert: (config, backbone tensors, whole model? False)."""
  if config is None:
    raise ConfigError("--format=hrformer_official needs --config: the segjax config whose "
                      "HRFormer backbone the weights fill")
  if isinstance(config, str):
    config = load_config_file(config)
  return config, convert_backbone(_load(input_path), input_path), False
