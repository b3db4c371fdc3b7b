"""Model zoo: `build_model(config)` turns `config.model` into a flax module.

Every model maps normalised NHWC images to `(logits, aux_logits)`. Parts are looked up in the
registries of segjax.models.registry; importing this package registers them all.
"""
from typing import Any

import jax.numpy as jnp
import ml_collections

from segjax.errors import ConfigError
from segjax.models import precision  # noqa: F401  (bfloat16 sums in float32 on CPU)
from segjax.models import backbones  # noqa: F401  (registers)
from segjax.models import heads  # noqa: F401  (registers)
from segjax.models import necks  # noqa: F401  (registers)
from segjax.models import segmentor  # noqa: F401  (registers)
from segjax.models import maskformer  # noqa: F401  (registers)
from segjax.models import deeplab_v2  # noqa: F401  (registers)
from segjax.models import unet  # noqa: F401  (registers)
from segjax.models import unet_plusplus  # noqa: F401  (registers)
from segjax.models import vnet  # noqa: F401  (registers)
from segjax.models import segnet  # noqa: F401  (registers)
from segjax.models import deconvnet  # noqa: F401  (registers)
from segjax.models import enet  # noqa: F401  (registers)
from segjax.models import espnet  # noqa: F401  (registers)
from segjax.models import layers
from segjax.models.registry import BACKBONES, HEADS, MODELS, NECKS  # noqa: F401

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  if name not in _DTYPES:
    raise ConfigError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def build_model(config: ml_collections.ConfigDict):
  """Builds the model named by config.model for config.data.num_classes classes.

  config.train.remat (how much the backward pass recomputes, a speed-for-memory trade that
  leaves parameters and results unchanged) is handed to the backbone, whose blocks apply it.
  """
  model_cfg = config.model.to_dict()
  dtype = compute_dtype(model_cfg.pop("dtype", "float32"))
  remat = config.get("train", {}).get("remat", "none")
  if remat != "none":
    model_cfg["backbone"] = _with_remat(model_cfg, remat)
  return MODELS.build(model_cfg, "model", num_classes=config.data.num_classes, dtype=dtype)


def _with_remat(model_cfg: dict, remat: str) -> dict:
  """model_cfg["backbone"] with remat=`remat`, or a ConfigError naming what cannot take it."""
  if remat not in layers.REMAT_POLICIES:
    raise ConfigError(f"train.remat must be one of {sorted(layers.REMAT_POLICIES)}, "
                      f"got {remat!r}")
  backbone = model_cfg.get("backbone")
  if not isinstance(backbone, dict) or "name" not in backbone:
    raise ConfigError(f"train.remat={remat!r}: model {model_cfg.get('name')!r} has no "
                      "backbone to recompute block by block")
  fn = BACKBONES.get(backbone["name"])
  target = getattr(fn, "func", fn)  # registered variants are functools.partial
  if "remat" not in getattr(target, "__dataclass_fields__", {}):
    supported = sorted(name for name in BACKBONES.names()
                       if "remat" in getattr(getattr(BACKBONES.get(name), "func",
                                                     BACKBONES.get(name)),
                                             "__dataclass_fields__", {}))
    raise ConfigError(f"train.remat={remat!r}: backbone {backbone['name']!r} has no per-block "
                      f"recomputation; backbones with one: {', '.join(supported)}")
  return {**backbone, "remat": remat}
