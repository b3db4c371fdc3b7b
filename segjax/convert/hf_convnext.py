"""HF transformers ConvNeXt weights -> segjax `convnext` parameters.

segjax's ConvNeXt names its modules like HF's ConvNextBackbone, so every tensor converts by
torch_layout's generic rule (the 7x7 depthwise conv is a grouped conv, (C, 1, 7, 7) ->
(7, 7, 1, C)); the layer scale `layer_scale_parameter` is stored as it is. Accepted: ImageNet
classifiers (ConvNextForImageClassification, `convnext.` prefix, classifier dropped), bare
ConvNextModel / ConvNextBackbone directories, and the backbone of an UperNet model.

An ImageNet checkpoint has no out norms. Its final LayerNorm (`layernorm`, applied to the
pooled last stage) initialises the last stage's out norm, as mmseg's ConvNeXt UperNet recipe
gets it (mmpretrain's `norm3` is both); the other out norms start fresh (ones, zeros).
"""
from typing import Dict

import numpy as np

from segjax.convert import hf_swin
from segjax.errors import CheckpointError

KNOWN = (
    r"embeddings\.patch_embeddings\.(weight|bias)",
    r"embeddings\.layernorm\.(weight|bias)",
    r"encoder\.stages\.\d+\.downsampling_layer\.[01]\.(weight|bias)",
    r"encoder\.stages\.\d+\.layers\.\d+\.(dwconv|layernorm|pwconv1|pwconv2)\.(weight|bias)",
    r"encoder\.stages\.\d+\.layers\.\d+\.layer_scale_parameter",
    r"hidden_states_norms\.stage\d+\.(weight|bias)",
)
DROPPED = (r"classifier\.(weight|bias)",)
RAW_LEAVES = ("layer_scale_parameter",)


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF ConvNextConfig (drop_path_rate and
  layer_scale_init_value, training settings, are left to the segjax config)."""
  if hf_config.get("model_type") != "convnext":
    raise CheckpointError(f"{source}: model_type={hf_config.get('model_type')!r}, expected "
                          "'convnext'")
  for key, supported in (("hidden_act", "gelu"), ("num_channels", 3)):
    if hf_config.get(key, supported) != supported:
      raise CheckpointError(f"{source}: {key}={hf_config[key]!r} is not supported by segjax's "
                            f"convnext (only {supported!r})")
  return {"name": "convnext", "hidden_sizes": tuple(int(c) for c in hf_config["hidden_sizes"]),
          "depths": tuple(int(d) for d in hf_config["depths"]),
          "patch_size": int(hf_config.get("patch_size", 4))}


def convert_backbone(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                     ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "convnext" (see the module docstring)."""
  overrides = model_overrides(hf_config, source)
  state_dict = dict(hf_swin.strip_prefix(state_dict, "convnext"))
  last = f"hidden_states_norms.stage{len(overrides['depths'])}"
  for leaf in ("weight", "bias"):
    final = state_dict.pop(f"layernorm.{leaf}", None)
    if final is not None and f"{last}.{leaf}" not in state_dict:
      state_dict[f"{last}.{leaf}"] = final
  flat = hf_swin.convert_named(state_dict, source, KNOWN, DROPPED, RAW_LEAVES)
  hf_swin.fresh_out_norms(flat, overrides["hidden_sizes"])
  return flat
