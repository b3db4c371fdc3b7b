"""HF transformers UperNetForSemanticSegmentation (Swin or ConvNeXt backbone) -> a whole
segjax model (--format=hf_upernet).

  python -m segjax.convert --format=hf_upernet --input=HF_DIR --output=DIR [--config=CFG]

HF_DIR is an HF model directory (config.json + model.safetensors or pytorch_model.bin), e.g.
openmmlab/upernet-swin-tiny or openmmlab/upernet-convnext-small.

Config. The *model* always comes from HF's config.json, so the converted model is HF's
exactly: the backbone architecture (`hf_swin.model_overrides` / `hf_convnext.
model_overrides`), the head width (`hidden_size`), `pool_scales`, the auxiliary FCN head
(`use_auxiliary_head`, `auxiliary_channels`, `auxiliary_num_convs`, `auxiliary_concat_input`,
`auxiliary_loss_weight`) and `data.num_classes` (`num_labels`). Everything else (data,
optimizer, schedule, evaluation, drop_path_rate, head dropout) comes from CFG, by default
configs/upernet_<swin|convnext>_<t|s|b>_ade.py of the same backbone size (the tiny one for
other sizes).

Names. HF's UperNetHead and UperNetFCNHead are mmseg's UPerHead and FCNHead with
`batch_norm` for `bn` and `classifier` for `conv_seg`; segjax's uper_head / fcn_head use
mmseg's names, so the heads convert by those renames; the backbone by hf_swin / hf_convnext.
HF's heads have no dropout before the classifier (mmseg's and segjax's 0.1): no parameter,
and nothing at inference. Every tensor must have a counterpart (unknown names are refused
here, missing ones by segjax.convert).
"""
import os
import re
from typing import Dict

import ml_collections

from segjax.convert import hf_convnext, hf_swin, torch_layout
from segjax.errors import CheckpointError
from segjax.tools.config_file import REPO

_CBR = r"(conv\.weight|batch_norm\.(weight|bias|running_mean|running_var|num_batches_tracked))"
HEAD_KNOWN = (
    r"(decode_head|auxiliary_head)\.classifier\.(weight|bias)",
    r"decode_head\.psp_modules\.\d+\.1\." + _CBR,
    r"decode_head\.(bottleneck|fpn_bottleneck)\." + _CBR,
    r"decode_head\.(lateral_convs|fpn_convs)\.\d+\." + _CBR,
    r"auxiliary_head\.(convs\.\d+|conv_cat)\." + _CBR,
)
HEAD_RENAMES = ((r"\.batch_norm\.", ".bn."), (r"\.classifier\.", ".conv_seg."),
                (r"^auxiliary_head\.", "auxiliary_head.0."))

# model_type -> (backbone module, {(width, depths): config size letter}).
FAMILIES = {
    "swin": (hf_swin, {(96, (2, 2, 6, 2)): "t", (96, (2, 2, 18, 2)): "s",
                       (128, (2, 2, 18, 2)): "b"}),
    "convnext": (hf_convnext, {(96, (3, 3, 9, 3)): "t", (96, (3, 3, 27, 3)): "s",
                               (128, (3, 3, 27, 3)): "b"}),
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _backbone(hf_config: Dict, source: str):
  """(model_type, backbone module, its HF config) of an UperNet config.json."""
  bb = hf_config.get("backbone_config")
  if hf_config.get("model_type") != "upernet" or not isinstance(bb, dict):
    raise CheckpointError(f"{source}: expected an HF UperNet directory (model_type 'upernet' "
                          f"with a backbone_config), got model_type "
                          f"{hf_config.get('model_type')!r}")
  model_type = bb.get("model_type")
  if model_type not in FAMILIES:
    raise CheckpointError(f"{source}: UperNet backbone model_type={model_type!r}; "
                          f"--format=hf_upernet converts {sorted(FAMILIES)}")
  if list(bb.get("out_features") or []) != STAGES:
    raise CheckpointError(f"{source}: backbone out_features={bb.get('out_features')!r}; "
                          f"segjax's UperNet reads all four stages {STAGES}")
  return model_type, FAMILIES[model_type][0], bb


def apply_hf_config(config: ml_collections.ConfigDict, hf_config: Dict,
                    source: str = "config.json") -> ml_collections.ConfigDict:
  """`config` with its model (and num_classes) replaced by the HF UperNet's (in place)."""
  model_type, family, bb = _backbone(hf_config, source)
  old = config.model.backbone.to_dict()
  backbone = family.model_overrides(bb, source)
  for key in ("drop_path_rate", "layer_scale_init_value", "dwconv_impl"):
    if key in old and (key != "layer_scale_init_value" or model_type == "convnext"):
      backbone[key] = old[key]
  config.model.backbone = backbone
  config.model.decode_head.update(name="uper_head", in_index=(0, 1, 2, 3),
                                  channels=int(hf_config.get("hidden_size", 512)),
                                  pool_scales=tuple(hf_config.get("pool_scales", (1, 2, 3, 6))))
  if hf_config.get("use_auxiliary_head", True):
    old_aux = config.model.get("auxiliary_head") or ({"dropout": 0.1},)
    aux = dict(old_aux[0].to_dict() if hasattr(old_aux[0], "to_dict") else old_aux[0])
    aux.update(name="fcn_head", in_index=2,
               channels=int(hf_config.get("auxiliary_channels", 256)),
               num_convs=int(hf_config.get("auxiliary_num_convs", 1)),
               concat_input=bool(hf_config.get("auxiliary_concat_input", False)),
               loss_weight=float(hf_config.get("auxiliary_loss_weight", 0.4)))
    config.model.auxiliary_head = (aux,)
  elif "auxiliary_head" in config.model:
    config.model.auxiliary_head = ()
  config.data.num_classes = int(hf_config.get("num_labels", len(hf_config.get("id2label", {}))))
  return config


def default_config_path(hf_config: Dict, source: str = "config.json") -> str:
  """configs/upernet_<family>_<t|s|b>_ade.py of the HF backbone's size (t otherwise)."""
  model_type, family, bb = _backbone(hf_config, source)
  arch = family.model_overrides(bb, source)
  width = arch.get("embed_dim", arch.get("hidden_sizes", (0,))[0])
  size = FAMILIES[model_type][1].get((width, arch["depths"]), "t")
  return os.path.join(REPO, "configs", f"upernet_{model_type}_{size}_ade.py")


def convert_state_dict(state_dict, hf_config: Dict, source: str):
  """HF UperNet tensors -> {"params/...", "batch_stats/..."}; unknown names refused."""
  _, family, _ = _backbone(hf_config, source)
  backbone = {k[len("backbone."):]: v for k, v in state_dict.items()
              if k.startswith("backbone.")}
  heads = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
  unknown = [k for k in heads if not any(re.fullmatch(p, k) for p in HEAD_KNOWN)]
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} HF tensor(s) have no segjax counterpart: "
                          f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
  # A whole model holds no classifier: only buffers (Swin's relative_position_index) drop.
  flat = hf_swin.convert_named(backbone, source, family.KNOWN, (r".*\.relative_position_index",),
                               family.RAW_LEAVES)
  flat.update(torch_layout.convert_by_name(heads, source, HEAD_RENAMES))
  return flat


# The `READERS` entry of segjax.convert: (config, tensors, whole model? True).
read = torch_layout.hf_whole_model_reader(default_config_path, apply_hf_config,
                                          convert_state_dict)
