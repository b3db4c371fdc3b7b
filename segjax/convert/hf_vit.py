"""HF transformers ViT weights (model_type "vit") -> segjax `vit` backbone parameters.

Accepted: ViTModel directories (bare keys) and ViTForImageClassification (`vit.` prefix);
the pooler and the classifier are dropped, any other tensor is refused by name. HF's names
map onto mmseg's module tree, which segjax's ViT mirrors (segjax/models/backbones/vit.py),
and then go through torch_layout's generic rules:

  embeddings.patch_embeddings.projection     patch_embed/projection (conv)
  embeddings.cls_token / position_embeddings cls_token / pos_embed (as they are)
  encoder.layer.i.layernorm_before / _after  layers_i/ln1 / ln2
  encoder.layer.i.attention.attention.{query,key,value}
                                             layers_i/attn/attn/in_proj (q|k|v concatenated,
                                             torch's packed in_proj_weight layout)
  encoder.layer.i.attention.output.dense     layers_i/attn/attn/out_proj
  encoder.layer.i.intermediate.dense / output.dense
                                             layers_i/ffn/layers_0_0 / layers_1
  layernorm                                  ln1 (the final norm)

The segjax config must describe HF's architecture: `model_overrides(hf_config)` gives the
backbone entries that do (patch conv with bias and no padding, i.e. floor(size / patch)
tokens like HF; LayerNorm eps 1e-12; final norm; HF's GELU form). mmseg's SETR/Segmenter
configs have neither the patch bias nor (SETR) the final norm: mmseg drops those tensors when
it loads such weights, segjax refuses them (`--format=big_vision_vit` drops them with a
warning, as mmseg).
"""
import re
from typing import Dict

import numpy as np

from segjax.convert import torch_layout
from segjax.errors import CheckpointError

_LAYER = r"encoder\.layer\.(\d+)\."
# (HF name regex, mmseg-style name template); {0} is the layer index, {p} weight|bias.
_RULES = (
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)",
     "backbone.patch_embed.projection.{p}"),
    (_LAYER + r"layernorm_before\.(weight|bias)", "backbone.layers.{0}.ln1.{p}"),
    (_LAYER + r"layernorm_after\.(weight|bias)", "backbone.layers.{0}.ln2.{p}"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)",
     "backbone.layers.{0}.attn.attn.out_proj.{p}"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", "backbone.layers.{0}.ffn.layers.0.0.{p}"),
    (_LAYER + r"output\.dense\.(weight|bias)", "backbone.layers.{0}.ffn.layers.1.{p}"),
    (r"layernorm\.(weight|bias)", "backbone.ln1.{p}"),
)
_QKV = _LAYER + r"attention\.attention\.(query|key|value)\.(weight|bias)"
_RAW = {"embeddings.cls_token": "params/backbone/cls_token",
        "embeddings.position_embeddings": "params/backbone/pos_embed"}
_DROPPED = (r"pooler\.dense\.(weight|bias)", r"classifier\.(weight|bias)")
# HF hidden_act -> segjax approximate_gelu ("gelu_new" and "gelu_pytorch_tanh" are the tanh
# approximation).
_GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """segjax `model.backbone` entries that reproduce an HF ViTConfig exactly."""
  if hf_config.get("model_type") != "vit":
    raise CheckpointError(f"{source}: model_type={hf_config.get('model_type')!r}, expected "
                          "'vit'")
  act = hf_config.get("hidden_act", "gelu")
  if act not in _GELU:
    raise CheckpointError(f"{source}: hidden_act={act!r}; segjax's vit supports "
                          f"{sorted(_GELU)}")
  if not hf_config.get("qkv_bias", True) or hf_config.get("num_channels", 3) != 3:
    raise CheckpointError(f"{source}: qkv_bias=False / num_channels != 3 are not supported")
  d, patch = int(hf_config["hidden_size"]), int(hf_config["patch_size"])
  return {"name": "vit", "img_size": int(hf_config["image_size"]), "patch_size": patch,
          "patch_pad": 0, "patch_bias": True, "embed_dims": d,
          "num_layers": int(hf_config["num_hidden_layers"]),
          "num_heads": int(hf_config["num_attention_heads"]),
          "mlp_ratio": int(hf_config["intermediate_size"]) / d,
          "layer_norm_eps": float(hf_config.get("layer_norm_eps", 1e-12)), "final_norm": True,
          "with_cls_token": True, "interpolate_mode": "bicubic",
          "approximate_gelu": _GELU[act]}


def convert_backbone(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                     ) -> Dict[str, np.ndarray]:
  """The hf_backbone CONVERTERS entry for model_type "vit" (see the module docstring)."""
  model_overrides(hf_config, source)  # refuses what segjax's vit cannot represent
  torch_names, raw, qkv, unknown = {}, {}, {}, []
  for key, value in state_dict.items():
    name = key[len("vit."):] if key.startswith("vit.") else key
    value = np.asarray(value, np.float32)
    if any(re.fullmatch(p, name) for p in _DROPPED):
      continue
    if name in _RAW:
      raw[_RAW[name]] = value
      continue
    m = re.fullmatch(_QKV, name)
    if m:
      qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
      continue
    for pattern, template in _RULES:
      m = re.fullmatch(pattern, name)
      if m:
        torch_names[template.format(*m.groups()[:-1], p=m.groups()[-1])] = value
        break
    else:
      unknown.append(key)
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} HF ViT tensor(s) have no segjax "
                          f"counterpart: {', '.join(unknown[:8])}"
                          f"{' ...' if len(unknown) > 8 else ''}")
  for (layer, leaf), parts in qkv.items():
    missing = [p for p in ("query", "key", "value") if p not in parts]
    if missing:
      raise CheckpointError(f"{source}: encoder.layer.{layer}.attention.attention lacks "
                            f"{'/'.join(missing)}.{leaf}")
    torch_names[f"backbone.layers.{layer}.attn.attn.in_proj.{leaf}"] = np.concatenate(
        [parts["query"], parts["key"], parts["value"]], axis=0)
  return {**torch_layout.convert_by_name(torch_names, source), **raw}
