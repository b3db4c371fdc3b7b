"""HF transformers Swin weights (and mmseg's SwinTransformer) -> segjax `swin` parameters.

segjax's Swin names its modules like HF's SwinBackbone, so an HF tensor converts by
torch_layout's generic rule; only the relative position bias tables (stored as they are) and
the buffers HF saves (relative_position_index, dropped) need a word. Accepted: ImageNet
classifiers (SwinForImageClassification, `swin.` prefix, classifier and final norm dropped),
bare SwinModel / SwinBackbone directories, and the backbone of an UperNet model. An ImageNet
checkpoint has no out norms (`hidden_states_norms`): they start fresh (ones, zeros), as when
HF or mmseg load such a checkpoint into a segmentation backbone.

mmseg checkpoints (`--format=mmseg`) are first put into HF's names and layouts
(`from_mmseg`): the fused qkv projection is split, and patch merging's norm and reduction are
re-ordered from nn.Unfold's channel order (c, kh, kw) to HF's concatenation order
(kw, kh, c).
"""
import re
from typing import Callable, Dict, Sequence, Tuple, Union

import numpy as np

from segjax.convert import torch_layout
from segjax.errors import CheckpointError

# HF SwinBackbone tensor names (no model prefix) that have a segjax counterpart.
KNOWN = (
    r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
    r"embeddings\.norm\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.(layernorm_before|layernorm_after)\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.(query|key|value)\.(weight|bias)",
    r"encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_bias_table",
    r"encoder\.layers\.\d+\.blocks\.\d+\.(attention\.output|intermediate|output)\.dense\."
    r"(weight|bias)",
    r"encoder\.layers\.\d+\.downsample\.(norm|reduction)\.(weight|bias)",
    r"hidden_states_norms\.stage\d+\.(weight|bias)",
)
# Buffers, and the heads of ImageNet models (SwinModel's final norm, the classifier).
DROPPED = (r".*\.relative_position_index", r"layernorm\.(weight|bias)",
           r"classifier\.(weight|bias)")
# Parameters stored as they are (no layout rule): leaf name -> flax leaf name.
RAW_LEAVES = ("relative_position_bias_table",)


def convert_named(state_dict: Dict[str, np.ndarray], source: str, known: Sequence[str],
                  dropped: Sequence[str] = (), raw_leaves: Sequence[str] = (),
                  prefix: str = "backbone") -> Dict[str, np.ndarray]:
  """{"params/<prefix>/...": array} of HF tensors whose module tree mirrors segjax's.

  Every key must match a `known` regex (or a `dropped` one, skipped); others are refused by
  name. Leaves in `raw_leaves` keep their name and layout; the rest follow torch_layout.
  Shared with hf_convnext."""
  unknown = [k for k in state_dict if not any(re.fullmatch(p, k) for p in (*known, *dropped))]
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} HF tensor(s) have no segjax counterpart: "
                          f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
  kept = {k: v for k, v in state_dict.items() if not any(re.fullmatch(p, k) for p in dropped)}
  raw = {k: v for k, v in kept.items() if k.rpartition(".")[2] in raw_leaves}
  out = torch_layout.convert_by_name({f"{prefix}.{k}": v for k, v in kept.items()
                                      if k not in raw}, source)
  for key, value in raw.items():
    module, _, leaf = f"{prefix}.{key}".rpartition(".")
    out[f"params/{torch_layout.module_path(module)}/{leaf}"] = np.asarray(value, np.float32)
  return out


def strip_prefix(state_dict: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
  """The keys under `prefix.` without it when every non-classifier key has it (an HF
  *ForImageClassification model), else the state dict as it is."""
  body = [k for k in state_dict if not k.startswith("classifier.")]
  if body and all(k.startswith(prefix + ".") for k in body):
    return {k[len(prefix) + 1:] if k.startswith(prefix + ".") else k: v
            for k, v in state_dict.items()}
  return state_dict


def fresh_out_norms(flat: Dict[str, np.ndarray], widths: Sequence[int]) -> None:
  """Adds LayerNorm init (scale 1, bias 0) for out norms the checkpoint lacks (in place)."""
  for i, c in enumerate(widths):
    base = f"params/backbone/hidden_states_norms/stage{i + 1}"
    if f"{base}/scale" not in flat and f"{base}/bias" not in flat:
      flat[f"{base}/scale"] = np.ones(c, np.float32)
      flat[f"{base}/bias"] = np.zeros(c, np.float32)


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF SwinConfig (drop_path_rate, a
  training setting, is left to the segjax config)."""
  if hf_config.get("model_type") != "swin":
    raise CheckpointError(f"{source}: model_type={hf_config.get('model_type')!r}, expected "
                          "'swin'")
  for key, supported in (("use_absolute_embeddings", False), ("hidden_act", "gelu"),
                         ("num_channels", 3)):
    if hf_config.get(key, supported) != supported:
      raise CheckpointError(f"{source}: {key}={hf_config[key]!r} is not supported by segjax's "
                            f"swin (only {supported!r})")
  return {"name": "swin", "embed_dim": int(hf_config["embed_dim"]),
          "depths": tuple(int(d) for d in hf_config["depths"]),
          "num_heads": tuple(int(h) for h in hf_config["num_heads"]),
          "window_size": int(hf_config["window_size"]),
          "patch_size": int(hf_config.get("patch_size", 4)),
          "mlp_ratio": float(hf_config.get("mlp_ratio", 4.0)),
          "qkv_bias": bool(hf_config.get("qkv_bias", True)),
          "layer_norm_eps": float(hf_config.get("layer_norm_eps", 1e-5))}


def convert_backbone(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                     ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "swin" (see the module docstring)."""
  overrides = model_overrides(hf_config, source)
  flat = convert_named(strip_prefix(state_dict, "swin"), source, KNOWN, DROPPED, RAW_LEAVES)
  fresh_out_norms(flat, [overrides["embed_dim"] * 2 ** i
                         for i in range(len(overrides["depths"]))])
  return flat


# mmseg SwinTransformer names (after `backbone.`) -> HF SwinBackbone names. `from_mmseg`
# splits the fused qkv and re-orders patch merging before these renames.
_BLOCK = r"stages\.(\d+)\.blocks\.(\d+)\."
_HF_BLOCK = r"encoder.layers.\1.blocks.\2."
MMSEG_RENAMES: Sequence[Tuple[str, Union[str, Callable]]] = (
    (r"^patch_embed\.projection\.", "embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "embeddings.norm."),
    (_BLOCK + r"norm1\.", _HF_BLOCK + "layernorm_before."),
    (_BLOCK + r"norm2\.", _HF_BLOCK + "layernorm_after."),
    (_BLOCK + r"attn\.w_msa\.relative_position_bias_table$",
     _HF_BLOCK + "attention.self.relative_position_bias_table"),
    (_BLOCK + r"attn\.w_msa\.proj\.", _HF_BLOCK + "attention.output.dense."),
    (_BLOCK + r"ffn\.layers\.0\.0\.", _HF_BLOCK + "intermediate.dense."),
    (_BLOCK + r"ffn\.layers\.1\.", _HF_BLOCK + "output.dense."),
    (r"^stages\.(\d+)\.downsample\.", r"encoder.layers.\1.downsample."),
    (r"^norm(\d+)\.", lambda m: f"hidden_states_norms.stage{int(m.group(1)) + 1}."),
)
MMSEG_KEY = re.compile(r"backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.")


def is_mmseg_swin(state_dict: Dict[str, np.ndarray]) -> bool:
  return any(MMSEG_KEY.match(k) for k in state_dict)


def _unfold_to_hf(x: np.ndarray) -> np.ndarray:
  """Last axis from nn.Unfold's (c, kh, kw) order to HF's concatenation (kw, kh, c)."""
  c = x.shape[-1] // 4
  y = x.reshape(x.shape[:-1] + (c, 2, 2))
  return np.moveaxis(y, (-3, -2, -1), (-1, -2, -3)).reshape(x.shape)


def from_mmseg(state_dict: Dict[str, np.ndarray], source: str
               ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """(the non-backbone tensors of an mmseg Swin segmentor, its converted backbone)."""
  rest, hf = {}, {}
  for key, value in state_dict.items():
    if not key.startswith("backbone."):
      rest[key] = value
      continue
    name = key[len("backbone."):]
    qkv = re.fullmatch(_BLOCK + r"attn\.w_msa\.qkv\.(weight|bias)", name)
    if qkv:
      for part, chunk in zip(("query", "key", "value"), np.split(np.asarray(value), 3)):
        hf[f"encoder.layers.{qkv[1]}.blocks.{qkv[2]}.attention.self.{part}.{qkv[3]}"] = chunk
      continue
    if re.fullmatch(r"stages\.\d+\.downsample\.(norm\.(weight|bias)|reduction\.weight)", name):
      value = _unfold_to_hf(np.asarray(value))
    for pattern, repl in MMSEG_RENAMES:
      name = re.sub(pattern, repl, name)
    hf[name] = value
  return rest, convert_named(hf, source, KNOWN, (r".*\.relative_position_index",), RAW_LEAVES)
