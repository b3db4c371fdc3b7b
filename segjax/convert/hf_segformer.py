"""HF transformers SegFormer / MiT weights -> segjax parameters.

Accepts full segmentation models (SegformerForSemanticSegmentation, e.g.
nvidia/segformer-b1-finetuned-cityscapes-1024-1024) and encoder-only ImageNet checkpoints
(SegformerForImageClassification, e.g. nvidia/mit-b1, whose classifier is dropped). Every
HF tensor must map onto a segjax parameter of the same shape: unknown keys are listed and
refused, never silently skipped.
"""
import re
from typing import Dict, List, Tuple

import numpy as np

from segjax.convert import torch_layout
from segjax.errors import CheckpointError

# (HF name regex, segjax path template, kind). Paths are "/"-joined; the first component is
# the collection ("params" or "batch_stats").
_RULES: List[Tuple[str, str, str]] = [
    (r"encoder\.patch_embeddings\.(\d+)\.proj\.(weight|bias)",
     "params/backbone/patch_embed{0}/proj/{p}", "conv"),
    (r"encoder\.patch_embeddings\.(\d+)\.layer_norm\.(weight|bias)",
     "params/backbone/patch_embed{0}/norm/{p}", "norm"),
    (r"encoder\.block\.(\d+)\.(\d+)\.layer_norm_1\.(weight|bias)",
     "params/backbone/block{0}_{1}/norm1/{p}", "norm"),
    (r"encoder\.block\.(\d+)\.(\d+)\.layer_norm_2\.(weight|bias)",
     "params/backbone/block{0}_{1}/norm2/{p}", "norm"),
    (r"encoder\.block\.(\d+)\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
     "params/backbone/block{0}_{1}/attn/{2}/{p}", "dense"),
    (r"encoder\.block\.(\d+)\.(\d+)\.attention\.self\.sr\.(weight|bias)",
     "params/backbone/block{0}_{1}/attn/sr/{p}", "conv"),
    (r"encoder\.block\.(\d+)\.(\d+)\.attention\.self\.layer_norm\.(weight|bias)",
     "params/backbone/block{0}_{1}/attn/sr_norm/{p}", "norm"),
    (r"encoder\.block\.(\d+)\.(\d+)\.attention\.output\.dense\.(weight|bias)",
     "params/backbone/block{0}_{1}/attn/proj/{p}", "dense"),
    (r"encoder\.block\.(\d+)\.(\d+)\.mlp\.dense1\.(weight|bias)",
     "params/backbone/block{0}_{1}/mlp/fc1/{p}", "dense"),
    (r"encoder\.block\.(\d+)\.(\d+)\.mlp\.dwconv\.dwconv\.(weight|bias)",
     "params/backbone/block{0}_{1}/mlp/dwconv/{p}", "conv"),
    (r"encoder\.block\.(\d+)\.(\d+)\.mlp\.dense2\.(weight|bias)",
     "params/backbone/block{0}_{1}/mlp/fc2/{p}", "dense"),
    (r"encoder\.layer_norm\.(\d+)\.(weight|bias)", "params/backbone/norm{0}/{p}", "norm"),
    (r"decode_head\.linear_c\.(\d+)\.proj\.(weight|bias)",
     "params/decode_head/linear_c{0}/{p}", "dense"),
    (r"decode_head\.linear_fuse\.(weight)", "params/decode_head/fuse/{p}", "conv"),
    (r"decode_head\.batch_norm\.(weight|bias)", "params/decode_head/fuse_bn/{p}", "norm"),
    (r"decode_head\.batch_norm\.(running_mean|running_var)",
     "batch_stats/decode_head/fuse_bn/{p}", "stat"),
    (r"decode_head\.classifier\.(weight|bias)", "params/decode_head/classifier/{p}", "conv"),
]
# Tensors that have no counterpart by design.
_DROPPED = (r"decode_head\.batch_norm\.num_batches_tracked", r"classifier\.(weight|bias)")

def convert_state_dict(state_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """HF tensors -> {"params/...": array, "batch_stats/...": array}; refuses unknown keys."""
  out, unknown = {}, []
  for key, value in state_dict.items():
    name = key[len("segformer."):] if key.startswith("segformer.") else key
    if any(re.fullmatch(p, key) for p in _DROPPED):
      continue
    for pattern, template, kind in _RULES:
      m = re.fullmatch(pattern, name)
      if m:
        groups = m.groups()
        _, leaf, array = torch_layout.to_flax(kind, groups[-1], np.asarray(value, np.float32))
        out[template.format(*groups[:-1], p=leaf)] = array
        break
    else:
      unknown.append(key)
  if unknown:
    raise CheckpointError(f"{len(unknown)} HF tensor(s) have no segjax counterpart: "
                          f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
  return out


def model_overrides(hf_config: Dict) -> Dict:
  """segjax config.model values that reproduce the HF architecture exactly."""
  if hf_config.get("model_type") != "segformer":
    raise CheckpointError(f"config.json has model_type={hf_config.get('model_type')!r}, "
                          "expected 'segformer'")
  return {
      "backbone": {
          "name": "mit",
          "hidden_sizes": tuple(hf_config["hidden_sizes"]),
          "depths": tuple(hf_config["depths"]),
          "num_heads": tuple(hf_config["num_attention_heads"]),
          "sr_ratios": tuple(hf_config["sr_ratios"]),
          "patch_sizes": tuple(hf_config["patch_sizes"]),
          "strides": tuple(hf_config["strides"]),
          "mlp_ratio": int(hf_config["mlp_ratios"][0]),
          "drop_path_rate": float(hf_config.get("drop_path_rate", 0.1)),
          # HF's port runs its LayerNorms with PyTorch's default eps.
          "layer_norm_eps": 1e-5,
      },
      "decode_head_channels": int(hf_config.get("decoder_hidden_size", 256)),
  }
