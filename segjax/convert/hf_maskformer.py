"""HF transformers MaskFormerForInstanceSegmentation (ResNet or Swin backbone) -> a whole
segjax `maskformer` model (--format=hf_maskformer).

  python -m segjax.convert --format=hf_maskformer --input=HF_DIR --output=DIR [--config=CFG]

HF_DIR is an HF model directory (config.json + model.safetensors or pytorch_model.bin), e.g.
facebook/maskformer-swin-tiny-ade or a MaskFormer with a ResNetConfig backbone.

Config. The *model* comes from HF's config.json, so the converted model is HF's exactly: the
backbone (ResNet: depth from `layer_type` + `depths`, `embedding_size`, `hidden_sizes`; Swin:
hf_swin.model_overrides), `fpn_feature_size`, `mask_feature_size`, the DETR decoder
(`d_model`, `decoder_layers`, `decoder_attention_heads`, `decoder_ffn_dim`, `num_queries`) and
`data.num_classes` (`num_labels`). Everything else (data, optimizer, schedule, dropout, loss
weights, the backbone's norm_eval / drop_path_rate) comes from CFG, by default
configs/maskformer_r50_ade.py (ResNet) or configs/maskformer_swin_t_ade.py (Swin).

Names. segjax's maskformer mirrors HF's module tree below `model.`, except that HF's
`pixel_level_module.encoder` is segjax's top-level `backbone`:
  * HF's ResNetBackbone is mmseg's / torchvision's ResNet V1b (7x7 stem conv, stride in the
    bottleneck's 3x3 conv, 1x1 conv + BN shortcut), segjax's `resnet` with deep_stem=False:
    `embedder.embedder.{convolution,normalization}` -> `conv1`/`bn1`,
    `encoder.stages.S.layers.B.layer.I.{convolution,normalization}` -> `layer{S+1}_B/conv{I+1}`
    /`bn{I+1}`, `...shortcut.{convolution,normalization}` -> `downsample_0`/`downsample_1`.
  * HF's MaskFormerSwinBackbone is HF's SwinBackbone with its out norms in a list
    (`hidden_states_norms.i` -> `hidden_states_norms/stage{i+1}`) and an unused final
    `layernorm` (dropped: no output reads it); the rest converts by hf_swin.
  * `mask_embedder.i.0` -> `mask_embedder/layers_i`; `queries_embedder.weight` is the
    embedding table as it is. HF's `criterion.empty_weight` (the no-object class weight, a
    buffer) is dropped: segjax's is `no_object_weight`.
Every tensor must have a counterpart (unknown names are refused here, missing ones by
segjax.convert).
"""
import os
import re
from typing import Dict

import ml_collections
import numpy as np

from segjax.convert import hf_swin, torch_layout
from segjax.errors import CheckpointError
from segjax.models.backbones import resnet
from segjax.tools.config_file import REPO

STAGES = ["stage1", "stage2", "stage3", "stage4"]
_GN = r"(0\.weight|1\.(weight|bias))"
HEAD_KNOWN = (
    r"pixel_level_module\.decoder\.fpn\.stem\." + _GN,
    r"pixel_level_module\.decoder\.fpn\.layers\.\d+\.(proj|block)\." + _GN,
    r"pixel_level_module\.decoder\.mask_projection\.(weight|bias)",
    r"transformer_module\.queries_embedder\.weight",
    r"transformer_module\.input_projection\.(weight|bias)",
    r"transformer_module\.decoder\.layers\.\d+\.(self_attn|encoder_attn)\."
    r"(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
    r"transformer_module\.decoder\.layers\.\d+\.(self_attn_layer_norm|encoder_attn_layer_norm|"
    r"final_layer_norm|fc1|fc2)\.(weight|bias)",
    r"transformer_module\.decoder\.layernorm\.(weight|bias)",
    r"class_predictor\.(weight|bias)",
    r"mask_embedder\.\d+\.0\.(weight|bias)",
)
HEAD_RENAMES = ((r"^mask_embedder\.(\d+)\.0\.", r"mask_embedder.layers.\1."),)
DROPPED = (r"criterion\.empty_weight",)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
RESNET_KNOWN = (
    r"embedder\.embedder\.(convolution\.weight|normalization\." + _BN + ")",
    r"encoder\.stages\.\d+\.layers\.\d+\.(layer\.\d+|shortcut)\.(convolution\.weight|"
    r"normalization\." + _BN + ")",
)
RESNET_RENAMES = (
    (r"^embedder\.embedder\.convolution\.", "conv1."),
    (r"^embedder\.embedder\.normalization\.", "bn1."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.(convolution|normalization)\.",
     lambda m: (f"layer{int(m[1]) + 1}.{m[2]}."
                f"{'conv' if m[4] == 'convolution' else 'bn'}{int(m[3]) + 1}.")),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(convolution|normalization)\.",
     lambda m: (f"layer{int(m[1]) + 1}.{m[2]}."
                f"downsample.{0 if m[3] == 'convolution' else 1}.")),
)
# MaskFormerSwinBackbone names (after the encoder prefix) -> HF SwinBackbone names.
SWIN_RENAMES = ((r"^model\.", ""),
                (r"^hidden_states_norms\.(\d+)\.",
                 lambda m: f"hidden_states_norms.stage{int(m[1]) + 1}."))
SWIN_DROPPED = (r"layernorm\.(weight|bias)", r".*\.relative_position_index")
SWIN_TYPES = ("swin", "maskformer-swin")


def _backbone_type(hf_config: Dict, source: str) -> str:
  bb = hf_config.get("backbone_config")
  if hf_config.get("model_type") != "maskformer" or not isinstance(bb, dict):
    raise CheckpointError(f"{source}: expected an HF MaskFormer directory (model_type "
                          f"'maskformer' with a backbone_config), got model_type "
                          f"{hf_config.get('model_type')!r}")
  model_type = bb.get("model_type")
  if model_type != "resnet" and model_type not in SWIN_TYPES:
    raise CheckpointError(f"{source}: MaskFormer backbone model_type={model_type!r}; "
                          f"--format=hf_maskformer converts resnet and swin")
  if model_type == "resnet" and list(bb.get("out_features") or []) != STAGES:
    raise CheckpointError(f"{source}: backbone_config.out_features="
                          f"{bb.get('out_features')!r}; MaskFormer reads all four stages "
                          f"{STAGES}")
  return "resnet" if model_type == "resnet" else "swin"


def resnet_overrides(bb: Dict, source: str) -> Dict:
  """segjax `resnet` arguments reproducing an HF ResNetConfig (V1b; refused otherwise)."""
  kind = bb.get("layer_type", "bottleneck")
  depths = tuple(int(d) for d in bb.get("depths", (3, 4, 6, 3)))
  depth = next((d for d, (k, blocks) in resnet.DEPTHS.items()
                if k == kind and blocks == depths), None)
  if depth is None:
    raise CheckpointError(f"{source}: backbone_config layer_type={kind!r} depths={depths} is "
                          f"no ResNet depth segjax builds ({sorted(resnet.DEPTHS)})")
  for key, supported in (("hidden_act", "relu"), ("downsample_in_bottleneck", False),
                         ("num_channels", 3)):
    if bb.get(key, supported) != supported:
      raise CheckpointError(f"{source}: backbone_config.{key}={bb[key]!r} is not supported "
                            f"(segjax's resnet: {supported!r})")
  hidden = tuple(int(h) for h in bb.get("hidden_sizes", (256, 512, 1024, 2048)))
  base = hidden[0] // resnet.EXPANSION[kind]
  if hidden != tuple(base * 2 ** i * resnet.EXPANSION[kind] for i in range(4)):
    raise CheckpointError(f"{source}: backbone_config.hidden_sizes={hidden} do not double "
                          "per stage (segjax's resnet: base_channels * 2**i * expansion)")
  return {"name": "resnet", "depth": depth, "deep_stem": False,
          "stem_channels": int(bb.get("embedding_size", 64)), "base_channels": base,
          "strides": (2 if bb.get("downsample_in_first_stage", False) else 1, 2, 2, 2)}


def model_overrides(hf_config: Dict, source: str = "config.json") -> Dict:
  """The segjax model arguments (backbone included) of an HF MaskFormer config.json."""
  kind = _backbone_type(hf_config, source)
  bb = dict(hf_config["backbone_config"])
  if kind == "swin":
    bb["model_type"] = "swin"
    backbone = hf_swin.model_overrides(bb, source)
  else:
    backbone = resnet_overrides(bb, source)
  dec = hf_config.get("decoder_config") or {}
  if dec.get("activation_function", "relu") != "relu":
    raise CheckpointError(f"{source}: decoder_config.activation_function="
                          f"{dec['activation_function']!r} is not supported (only 'relu')")
  return {"backbone": backbone,
          "num_queries": int(dec.get("num_queries", 100)),
          "hidden_size": int(dec.get("d_model", 256)),
          "decoder_layers": int(dec.get("decoder_layers", 6)),
          "decoder_attention_heads": int(dec.get("decoder_attention_heads", 8)),
          "decoder_ffn_dim": int(dec.get("decoder_ffn_dim", 2048)),
          "fpn_feature_size": int(hf_config.get("fpn_feature_size", 256)),
          "mask_feature_size": int(hf_config.get("mask_feature_size", 256))}


def apply_hf_config(config: ml_collections.ConfigDict, hf_config: Dict,
                    source: str = "config.json") -> ml_collections.ConfigDict:
  """`config` with its model architecture (and num_classes) replaced by HF's (in place)."""
  overrides = model_overrides(hf_config, source)
  backbone = overrides.pop("backbone")
  old = config.model.get("backbone")
  old = old.to_dict() if hasattr(old, "to_dict") else dict(old or {})
  keep = ("norm_eval", "frozen_stages") if backbone["name"] == "resnet" else ("drop_path_rate",)
  backbone.update({k: old[k] for k in keep if k in old})
  model = config.model.to_dict()
  model.update(overrides, name="maskformer", backbone=backbone)
  for key in ("decode_head", "neck", "auxiliary_head"):
    model.pop(key, None)
  config.model = ml_collections.ConfigDict(model)
  config.data.num_classes = int(hf_config.get("num_labels", len(hf_config.get("id2label", {}))))
  return config


def default_config_path(hf_config: Dict, source: str = "config.json") -> str:
  kind = _backbone_type(hf_config, source)
  name = "maskformer_r50_ade.py" if kind == "resnet" else "maskformer_swin_t_ade.py"
  return os.path.join(REPO, "configs", name)


def convert_state_dict(state_dict: Dict[str, np.ndarray], hf_config: Dict, source: str
                       ) -> Dict[str, np.ndarray]:
  """HF MaskFormer tensors -> {"params/...", "batch_stats/..."}; unknown names refused."""
  kind = _backbone_type(hf_config, source)
  state_dict = {k[len("model."):] if k.startswith("model.") else k: v
                for k, v in state_dict.items()}
  prefix = "pixel_level_module.encoder."
  encoder = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
  heads = {k: v for k, v in state_dict.items() if not k.startswith(prefix)
           and not any(re.fullmatch(p, k) for p in DROPPED)}
  unknown = [k for k in heads if not any(re.fullmatch(p, k) for p in HEAD_KNOWN)]
  if kind == "resnet":
    unknown += [prefix + k for k in encoder
                if not any(re.fullmatch(p, k) for p in RESNET_KNOWN)]
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} HF tensor(s) have no segjax counterpart: "
                          f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
  if kind == "resnet":
    flat = torch_layout.convert_by_name({f"backbone.{k}": v for k, v in _renamed(
        encoder, RESNET_RENAMES).items()}, source)
  else:
    flat = hf_swin.convert_named(_renamed(encoder, SWIN_RENAMES), source, hf_swin.KNOWN,
                                 SWIN_DROPPED, hf_swin.RAW_LEAVES)
  table = heads.pop("transformer_module.queries_embedder.weight", None)
  flat.update(torch_layout.convert_by_name(heads, source, HEAD_RENAMES))
  if table is not None:
    flat["params/transformer_module/queries_embedder/embedding"] = np.asarray(table, np.float32)
  return flat


def _renamed(state_dict: Dict[str, np.ndarray], renames) -> Dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    for pattern, repl in renames:
      key = re.sub(pattern, repl, key)
    out[key] = value
  return out


# The `READERS` entry of segjax.convert: (config, tensors, whole model? True).
read = torch_layout.hf_whole_model_reader(default_config_path, apply_hf_config,
                                          convert_state_dict)
