"""HF transformers ImageNet backbones -> encoder-only segjax checkpoints (--format=hf_backbone).

  python -m segjax.convert --format=hf_backbone --input=HF_DIR --config=configs/X.py --output=DIR

HF_DIR is an HF model directory (config.json + model.safetensors or pytorch_model.bin) of an
ImageNet classifier or bare backbone (e.g. microsoft/swin-tiny-patch4-window7-224,
facebook/convnext-tiny-224); its `model_type` picks the family's converter below and the
classifier is dropped. CFG is the segjax config the weights will initialise (its backbone must
be the same variant: every converted tensor must land on a backbone parameter of the same
shape, and every backbone parameter must be covered). The output is a checkpoint directory for
`--config.init_from=DIR`: the heads stay freshly initialised.
"""
from typing import Callable, Dict

import numpy as np

from segjax.convert import torch_layout
from segjax.convert import hf_convnext, hf_swin
from segjax.convert import hf_vit
from segjax.convert import hf_pvt
from segjax.convert import hf_poolformer
from segjax.errors import CheckpointError, ConfigError
from segjax.tools.config_file import load_config_file

# HF config.json "model_type" -> fn(state_dict, hf_config, source) returning
# {"params/backbone/...": array, "batch_stats/backbone/...": array}. One entry per family;
# each function lives in that family's converter module.
CONVERTERS: Dict[str, Callable[[Dict[str, np.ndarray], Dict, str], Dict[str, np.ndarray]]] = {
    "swin": hf_swin.convert_backbone,
    "convnext": hf_convnext.convert_backbone,
    "vit": hf_vit.convert_backbone,
    "pvt": hf_pvt.convert_backbone,
    "pvt_v2": hf_pvt.convert_backbone_v2,
    "poolformer": hf_poolformer.convert_backbone,
}


def read(input_path: str, config):
  """The `READERS` entry of segjax.convert: (config, backbone tensors, whole model? False)."""
  if config is None:
    raise ConfigError("--format=hf_backbone needs --config: the segjax config the backbone "
                      "initialises")
  if isinstance(config, str):
    config = load_config_file(config)
  hf_config, state_dict = torch_layout.load_hf_directory(input_path)
  model_type = hf_config.get("model_type")
  if model_type not in CONVERTERS:
    raise CheckpointError(f"{input_path}: config.json has model_type={model_type!r}; "
                          f"--format=hf_backbone converts {sorted(CONVERTERS)}")
  return config, CONVERTERS[model_type](state_dict, hf_config, input_path), False
