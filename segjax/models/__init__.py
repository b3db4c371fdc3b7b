"""Model zoo: `build_model(config)` turns `config.model` into a flax module.

Every model maps normalised NHWC images to `(logits, aux_logits)`. Parts are looked up in the
registries of segjax.models.registry; importing this package registers them all.
"""
from typing import Any

import jax.numpy as jnp
import ml_collections

from segjax.errors import ConfigError
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
from segjax.models.registry import BACKBONES, HEADS, MODELS, NECKS  # noqa: F401

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  if name not in _DTYPES:
    raise ConfigError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def build_model(config: ml_collections.ConfigDict):
  """Builds the model named by config.model for config.data.num_classes classes."""
  model_cfg = config.model.to_dict()
  dtype = compute_dtype(model_cfg.pop("dtype", "float32"))
  return MODELS.build(model_cfg, "model", num_classes=config.data.num_classes, dtype=dtype)
