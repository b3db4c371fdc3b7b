"""HF transformers PVT v1 (`pvt`) and PVT v2 (`pvt_v2`) weights -> segjax `pvt` / `pvt_v2`.

PVT v1: segjax names its modules like HF's PvtModel, so every tensor converts by
torch_layout's generic rule; the position embeddings and the cls token are stored as they are.

PVT v2: the stage level carries HF's names, the blocks are SegFormer's MiT blocks
(segjax/models/backbones/pvt_v2.py), so HF's block names are renamed onto MiT's after the
generic rule (`attention/spatial_reduction` -> `attn/sr`, `mlp/dense1` -> `mlp/fc1`, ...).

Accepted: ImageNet classifiers (Pvt(V2)ForImageClassification, `pvt.` / `pvt_v2.` prefix,
classifier dropped), bare PvtModel / PvtV2Model / PvtV2Backbone directories. A tensor without
a segjax counterpart is refused by name; the caller (segjax.convert) refuses missing ones.
"""
import re
from typing import Dict, Sequence, Tuple

import numpy as np

from segjax.convert import hf_swin
from segjax.errors import CheckpointError

KNOWN_V1 = (
    r"encoder\.patch_embeddings\.\d+\.(projection|layer_norm)\.(weight|bias)",
    r"encoder\.patch_embeddings\.\d+\.(position_embeddings|cls_token)",
    r"encoder\.block\.\d+\.\d+\.(layer_norm_1|layer_norm_2)\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.attention\.self\.(query|key|value|sequence_reduction|"
    r"layer_norm)\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.attention\.output\.dense\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.mlp\.(dense1|dense2)\.(weight|bias)",
    r"encoder\.layer_norm\.(weight|bias)",
)
KNOWN_V2 = (
    r"encoder\.layers\.\d+\.patch_embedding\.(proj|layer_norm)\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.(layer_norm_1|layer_norm_2)\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.attention\.(query|key|value|proj|spatial_reduction|"
    r"layer_norm)\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.mlp\.(dense1|dwconv\.dwconv|dense2)\.(weight|bias)",
    r"encoder\.layers\.\d+\.layer_norm\.(weight|bias)",
)
DROPPED = (r"classifier\.(weight|bias)",)
RAW_LEAVES = ("position_embeddings", "cls_token")

# segjax paths after the generic rule (HF names) -> the MiT block names pvt_v2.py uses.
_BLOCK = r"(encoder/layers_\d+/blocks_\d+)/"
V2_RENAMES: Sequence[Tuple[str, str]] = (
    (r"(encoder/layers_\d+/patch_embedding)/layer_norm/", r"\1/norm/"),
    (_BLOCK + r"layer_norm_1/", r"\1/norm1/"),
    (_BLOCK + r"layer_norm_2/", r"\1/norm2/"),
    (_BLOCK + r"attention/spatial_reduction/", r"\1/attn/sr/"),
    (_BLOCK + r"attention/layer_norm/", r"\1/attn/sr_norm/"),
    (_BLOCK + r"attention/", r"\1/attn/"),
    (_BLOCK + r"mlp/dense1/", r"\1/mlp/fc1/"),
    (_BLOCK + r"mlp/dwconv/dwconv/", r"\1/mlp/dwconv/"),
    (_BLOCK + r"mlp/dense2/", r"\1/mlp/fc2/"),
)


def _check(hf_config: Dict, model_type: str, source: str) -> None:
  if hf_config.get("model_type") != model_type:
    raise CheckpointError(f"{source}: model_type={hf_config.get('model_type')!r}, expected "
                          f"{model_type!r}")
  supported = {"hidden_act": "gelu", "num_channels": 3}
  if model_type == "pvt_v2":
    supported["qkv_bias"] = True  # MiT's attention always has biases
  for key, value in supported.items():
    if hf_config.get(key, value) != value:
      raise CheckpointError(f"{source}: {key}={hf_config[key]!r} is not supported by segjax's "
                            f"{model_type} (only {value!r})")
  if hf_config.get("num_encoder_blocks", 4) != len(hf_config["depths"]):
    raise CheckpointError(f"{source}: num_encoder_blocks={hf_config['num_encoder_blocks']} "
                          f"differs from the {len(hf_config['depths'])} stages of `depths`")


def _stage_fields(hf_config: Dict) -> Dict:
  ints = lambda key: tuple(int(v) for v in hf_config[key])  # noqa: E731
  return {"hidden_sizes": ints("hidden_sizes"), "depths": ints("depths"),
          "num_heads": ints("num_attention_heads"), "patch_sizes": ints("patch_sizes"),
          "strides": ints("strides"), "layer_norm_eps": float(hf_config.get("layer_norm_eps",
                                                                            1e-6))}


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF PvtConfig (drop_path_rate, a
  training setting, is left to the segjax config)."""
  _check(hf_config, "pvt", source)
  image_size = hf_config.get("image_size", 224)
  if not isinstance(image_size, int):
    raise CheckpointError(f"{source}: image_size={image_size!r}; PVT's position embeddings "
                          "need one square size")
  return {"name": "pvt", **_stage_fields(hf_config),
          "sr_ratios": tuple(int(v) for v in hf_config["sequence_reduction_ratios"]),
          "mlp_ratios": tuple(float(v) for v in hf_config["mlp_ratios"]),
          "image_size": image_size, "qkv_bias": bool(hf_config.get("qkv_bias", True))}


def model_overrides_v2(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF PvtV2Config."""
  _check(hf_config, "pvt_v2", source)
  return {"name": "pvt_v2", **_stage_fields(hf_config),
          "sr_ratios": tuple(int(v) for v in hf_config["sr_ratios"]),
          "mlp_ratios": tuple(int(v) for v in hf_config["mlp_ratios"]),
          "linear_attention": bool(hf_config.get("linear_attention", False))}


def convert_backbone(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                     ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "pvt" (see the module docstring)."""
  model_overrides(hf_config, source)
  return hf_swin.convert_named(hf_swin.strip_prefix(state_dict, "pvt"), source, KNOWN_V1,
                               DROPPED, RAW_LEAVES)


def convert_backbone_v2(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                        ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "pvt_v2" (see the module docstring)."""
  model_overrides_v2(hf_config, source)
  flat = hf_swin.convert_named(hf_swin.strip_prefix(state_dict, "pvt_v2"), source, KNOWN_V2,
                               DROPPED)
  out = {}
  for key, value in flat.items():
    for pattern, repl in V2_RENAMES:
      key = re.sub(pattern, repl, key)
    out[key] = value
  return out
