"""big_vision / AugReg ViT `.npz` checkpoints -> encoder-only segjax `vit` checkpoints
(--format=big_vision_vit).

  python -m segjax.convert --format=big_vision_vit --input=L_16-i21k-...npz \\
      --config=configs/setr_naive_vitl_city.py --output=weights/vit_l16

The .npz holds flax parameters flattened with "/" (read with np.load; no torch, no jax).
Two layouts exist, both read (names checked against google-research/big_vision
`big_vision/models/vit.py`, google-research/vision_transformer `vit_jax/models_vit.py` +
`checkpoint.py`, and the two readers of these files that ship with references here: mmseg's
`tools/model_converters/vitjax2mmseg.py` and timm's `_load_weights`):

  vision_transformer / AugReg (`gs://vit_models/augreg/*.npz`, the ImageNet-21k ViTs of
  SETR and Segmenter), saved with pre-linen module numbering:
    embedding/{kernel (p, p, 3, D), bias}   cls (1, 1, D)
    Transformer/posembed_input/pos_embedding (1, 1 + N, D)   (cls entry first)
    Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_1/{query, key,
      value}/{kernel (D, heads, d), bias (heads, d)}, .../out/{kernel (heads, d, D), bias},
      LayerNorm_2, MlpBlock_3/Dense_0, Dense_1
    Transformer/encoder_norm   head, pre_logits (classifier: dropped)
  big_vision (linen numbering: MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0;
  `Transformer/encoderblock/...` stacked on a leading layer axis when trained with scan):
    pos_embedding (1, N, D) at the top level, added *before* the cls token is prepended, so
    here cls_token = cls and the cls entry of pos_embed is 0; `cls` only for pool_type
    "tok" (without it the config must have with_cls_token=False). MAPHead_0 is dropped.
  Either may carry the "opt/target/" prefix of old checkpoints.

The weights fill the backbone of the segjax config CFG (config required; its num_heads is
checked against the kernels, which the packed in_proj alone cannot tell). A position
embedding learnt for another grid is resized to CFG's `img_size // patch_size` grid with
CFG's interpolate_mode (what mmseg's VisionTransformer.init_weights does). Where CFG's ViT
lacks a tensor the file has (mmseg's configs: no patch-conv bias; SETR: no final norm)
the tensor is dropped with a warning, as mmseg's loading drops it; any other unknown or
missing tensor is refused by name. Note: big_vision's MLPs use flax's tanh-approximated GELU;
mmseg (and CFG unless `approximate_gelu=True`) uses the exact one.
"""
import os
import re
from typing import Dict, List, Tuple

import numpy as np
from absl import logging

from segjax.errors import CheckpointError, ConfigError
from segjax.models.backbones import vit as vit_lib
from segjax.models.registry import BACKBONES
from segjax.tools.config_file import load_config_file

# (layer-norm 1, attention, layer-norm 2, MLP) module names inside an encoder block.
PRE_LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
DROPPED = (r"head/(kernel|bias)", r"pre_logits/(kernel|bias)", r"MAPHead_0/.*")


def load_npz(path: str) -> Dict[str, np.ndarray]:
  """The arrays of a .npz file by key, without a prefix "opt/target/" (old checkpoints)."""
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: np.asarray(npz[k]) for k in npz.files}
  except Exception as e:  # zip / format errors: one line naming the file
    raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
  prefix = "opt/target/"
  if arrays and all(k.startswith(prefix) for k in arrays):
    arrays = {k[len(prefix):]: v for k, v in arrays.items()}
  return arrays


def _unstack_scan(w: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """big_vision's scan layout (Transformer/encoderblock/... with a leading layer axis) ->
  one Transformer/encoderblock_{i}/... per layer."""
  scan = "Transformer/encoderblock/"
  if not any(k.startswith(scan) for k in w):
    return w
  out = {k: v for k, v in w.items() if not k.startswith(scan)}
  for k, v in w.items():
    if k.startswith(scan):
      for i in range(v.shape[0]):
        out[f"Transformer/encoderblock_{i}/{k[len(scan):]}"] = v[i]
  return out


def convert_npz(w: Dict[str, np.ndarray], backbone: Dict, source: str
                ) -> Dict[str, np.ndarray]:
  """{"params/backbone/...": array} of a big_vision / AugReg ViT for the segjax `backbone`
  config (a dict of VisionTransformer arguments); see the module docstring."""
  w = _unstack_scan(dict(w))
  used: List[str] = []
  missing: List[str] = []
  dropped: List[str] = []

  def take(key: str):
    if key not in w:
      missing.append(key)
      return None
    used.append(key)
    return np.asarray(w[key], np.float32)

  model = vit_lib.VisionTransformer(**{k: v for k, v in backbone.items() if k != "name"})
  depth = 1 + max([int(m.group(1)) for k in w
                   for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m], default=-1)
  names = PRE_LINEN if any(f"/{PRE_LINEN[1]}/" in k for k in w) else LINEN
  ln1, mha, ln2, mlp = names
  out = {}
  kernel = take("embedding/kernel")
  if kernel is not None and kernel.shape[:2] != (model.patch_size,) * 2:
    raise CheckpointError(f"{source}: embedding/kernel {kernel.shape} is a "
                          f"{kernel.shape[0]}x{kernel.shape[1]} patch; model.backbone."
                          f"patch_size is {model.patch_size}")
  out["patch_embed/projection/kernel"] = kernel
  if model.patch_bias:
    out["patch_embed/projection/bias"] = take("embedding/bias")
  elif "embedding/bias" in w:
    dropped.append("embedding/bias")

  # Position embedding -> mmseg's (1, 1 + N, D) with the cls entry first.
  if "Transformer/posembed_input/pos_embedding" in w:  # AugReg: a cls entry first, if any
    pos = take("Transformer/posembed_input/pos_embedding")
    with_cls_entry = not _is_square(pos.shape[1])
  else:  # big_vision: added to the patches only
    pos = take("pos_embedding")
    with_cls_entry = False
  if pos is not None and not with_cls_entry:
    pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
  if "cls" in w:
    out["cls_token"] = take("cls")
  elif model.with_cls_token:
    missing.append("cls")
  elif pos is not None:  # a cls-less model: segjax's token is only dropped again
    out["cls_token"] = np.zeros_like(pos[:, :1])
  if pos is not None:
    out["pos_embed"] = _fit_pos_embed(pos, model, source)

  for i in range(depth):
    b = f"Transformer/encoderblock_{i}/"
    o = f"layers_{i}/"
    for src, dst in ((ln1, "ln1"), (ln2, "ln2")):
      out[f"{o}{dst}/scale"] = take(f"{b}{src}/scale")
      out[f"{o}{dst}/bias"] = take(f"{b}{src}/bias")
    q, k, v = (take(f"{b}{mha}/{n}/kernel") for n in ("query", "key", "value"))
    if q is not None and k is not None and v is not None:
      if q.ndim != 3 or q.shape[1] != model.num_heads:
        raise CheckpointError(f"{source}: {b}{mha}/query/kernel has shape {q.shape} "
                              f"(D, heads, d); model.backbone.num_heads is {model.num_heads}")
      out[f"{o}attn/attn/in_proj/kernel"] = np.concatenate(
          [x.reshape(x.shape[0], -1) for x in (q, k, v)], axis=1)
    qb, kb, vb = (take(f"{b}{mha}/{n}/bias") for n in ("query", "key", "value"))
    if qb is not None and kb is not None and vb is not None:
      out[f"{o}attn/attn/in_proj/bias"] = np.concatenate([x.reshape(-1) for x in (qb, kb, vb)])
    wo = take(f"{b}{mha}/out/kernel")
    out[f"{o}attn/attn/out_proj/kernel"] = None if wo is None else wo.reshape(-1, wo.shape[-1])
    out[f"{o}attn/attn/out_proj/bias"] = take(f"{b}{mha}/out/bias")
    for j, dst in ((0, "layers_0_0"), (1, "layers_1")):
      out[f"{o}ffn/{dst}/kernel"] = take(f"{b}{mlp}/Dense_{j}/kernel")
      out[f"{o}ffn/{dst}/bias"] = take(f"{b}{mlp}/Dense_{j}/bias")
  for leaf in ("scale", "bias"):
    key = f"Transformer/encoder_norm/{leaf}"
    if model.final_norm:
      out[f"ln1/{leaf}"] = take(key)
    elif key in w:
      dropped.append(key)

  unknown = [k for k in w if k not in used and k not in dropped
             and not any(re.fullmatch(p, k) for p in DROPPED)]
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} tensor(s) are not part of a "
                          f"big_vision/AugReg ViT: {', '.join(sorted(unknown)[:8])}"
                          f"{' ...' if len(unknown) > 8 else ''}")
  if missing:
    raise CheckpointError(f"{source}: {len(missing)} tensor(s) of a ViT missing: "
                          f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
  if dropped:
    logging.warning("%s: dropped %s: model.backbone has no patch bias / final norm "
                    "(mmseg's loading drops them too)", source, ", ".join(dropped))
  return {f"params/backbone/{k}": v for k, v in out.items()}


def _is_square(n: int) -> bool:
  return int(round(np.sqrt(n))) ** 2 == n


def _fit_pos_embed(pos: np.ndarray, model, source: str) -> np.ndarray:
  """pos (1, 1 + n*n, D) resized to the model's img_size // patch_size grid if it differs."""
  n = int(round(np.sqrt(pos.shape[1] - 1)))
  if not _is_square(pos.shape[1] - 1):
    raise CheckpointError(f"{source}: position embedding of {pos.shape[1] - 1} patches is "
                          "not a square grid")
  grid = model.pos_grid()
  if grid == (n, n):
    return pos
  logging.info("%s: position embedding resized from %dx%d to %dx%d (%s)", source, n, n,
               *grid, model.interpolate_mode)
  return np.asarray(vit_lib.resize_pos_embed(pos, grid, (n, n), model.interpolate_mode))


def read(input_path: str, config) -> Tuple:
  """The `READERS` entry of segjax.convert: (config, backbone tensors, whole model? False)."""
  if config is None:
    raise ConfigError("--format=big_vision_vit needs --config: the segjax config whose ViT "
                      "backbone the weights initialise")
  if isinstance(config, str):
    config = load_config_file(config)
  backbone = config.model.backbone.to_dict()
  fn = BACKBONES.get(backbone.get("name", ""))
  if getattr(fn, "func", fn) is not vit_lib.VisionTransformer:
    raise ConfigError(f"--format=big_vision_vit: model.backbone.name={backbone.get('name')!r} "
                      "is not a ViT (vit, vit_tiny, vit_small, vit_base, vit_large)")
  args = {**getattr(fn, "keywords", {}), **backbone}  # a variant's defaults, then CFG's
  return config, convert_npz(load_npz(input_path), args, input_path), False
