"""HF transformers PoolFormer weights -> segjax `poolformer` parameters.

segjax's PoolFormer names its modules like HF's PoolFormerModel, so the tensors convert by
torch_layout's generic rule, with two details: the MLP's 1x1 conv kernels (out, in, 1, 1) are
squeezed to linear weights (segjax computes them as layers.Dense), and the layer scales
`layer_scale_1/2` are stored as they are. Accepted: ImageNet classifiers
(PoolFormerForImageClassification: `poolformer.` prefix, final `norm`, classifier dropped) and
bare PoolFormerModel directories.

An ImageNet checkpoint has no per-output norms. Its final GroupNorm (applied to the last stage
before pooling) initialises the last one (`norm6`), as mmseg's PoolFormer recipe gets it: the
mmpretrain classifier's final norm *is* its norm6, loaded with prefix `backbone.`; the other
out norms start fresh (ones, zeros), as in the official and mmseg recipes. The target config
must therefore keep `out_norms=True`.
"""
from typing import Dict

import numpy as np

from segjax.convert import hf_swin
from segjax.errors import CheckpointError

KNOWN = (
    r"encoder\.patch_embeddings\.\d+\.projection\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.(before_norm|after_norm)\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.output\.(conv1|conv2)\.(weight|bias)",
    r"encoder\.block\.\d+\.\d+\.layer_scale_[12]",
    r"norm\d+\.(weight|bias)",
)
DROPPED = (r"classifier\.(weight|bias)",)
RAW_LEAVES = ("layer_scale_1", "layer_scale_2")


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF PoolFormerConfig (drop_path_rate, a
  training setting, is left to the segjax config)."""
  if hf_config.get("model_type") != "poolformer":
    raise CheckpointError(f"{source}: model_type={hf_config.get('model_type')!r}, expected "
                          "'poolformer'")
  for key, supported in (("hidden_act", "gelu"), ("num_channels", 3)):
    if hf_config.get(key, supported) != supported:
      raise CheckpointError(f"{source}: {key}={hf_config[key]!r} is not supported by segjax's "
                            f"poolformer (only {supported!r})")
  ints = lambda key: tuple(int(v) for v in hf_config[key])  # noqa: E731
  return {"name": "poolformer", "hidden_sizes": ints("hidden_sizes"), "depths": ints("depths"),
          "patch_sizes": ints("patch_sizes"), "strides": ints("strides"),
          "padding": ints("padding"), "pool_size": int(hf_config.get("pool_size", 3)),
          "mlp_ratio": float(hf_config.get("mlp_ratio", 4.0)),
          "use_layer_scale": bool(hf_config.get("use_layer_scale", True)),
          "layer_scale_init_value": float(hf_config.get("layer_scale_init_value", 1e-5))}


def convert_backbone(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                     ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "poolformer" (see the module docstring)."""
  overrides = model_overrides(hf_config, source)
  widths = overrides["hidden_sizes"]
  last = f"norm{2 * (len(widths) - 1)}"
  sd = {}
  for key, value in state_dict.items():
    key = key[len("poolformer."):] if key.startswith("poolformer.") else key
    if key in ("norm.weight", "norm.bias"):  # the classifier's final norm -> the last out norm
      key = f"{last}.{key.rpartition('.')[2]}"
    value = np.asarray(value)
    if key.endswith(("output.conv1.weight", "output.conv2.weight")) and value.shape[2:] == (1, 1):
      value = value[:, :, 0, 0]  # 1x1 conv -> linear (out, in)
    sd[key] = value
  flat = hf_swin.convert_named(sd, source, KNOWN, DROPPED, RAW_LEAVES)
  for i, c in enumerate(widths):
    base = f"params/backbone/norm{2 * i}"
    if f"{base}/scale" not in flat and f"{base}/bias" not in flat:
      flat[f"{base}/scale"] = np.ones(c, np.float32)
      flat[f"{base}/bias"] = np.zeros(c, np.float32)
  return flat
