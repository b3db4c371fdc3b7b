"""What every decode head shares (mmseg's BaseDecodeHead): choosing its input feature maps
and the final dropout + 1x1 classifier, named `conv_seg` as in mmseg."""
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers

Index = Union[int, Sequence[int]]


def select_inputs(features: Sequence[jnp.ndarray], in_index: Index,
                  input_transform: Optional[str] = None):
  """mmseg's `_transform_inputs`: one map (`in_index` an int), several maps
  ("multiple_select"), or several maps resized to the first and concatenated
  ("resize_concat")."""
  if input_transform is None:
    if not isinstance(in_index, int):
      raise ConfigError(f"in_index {in_index} selects several maps: set input_transform to "
                        "'resize_concat' or 'multiple_select'")
    return features[in_index]
  maps = [features[i] for i in in_index]
  if input_transform == "multiple_select":
    return maps
  if input_transform == "resize_concat":
    return jnp.concatenate([layers.resize_to(m, maps[0]) for m in maps], axis=-1)
  raise ConfigError(f"input_transform must be None, 'resize_concat' or 'multiple_select', "
                    f"got {input_transform!r}")


def classify(x: jnp.ndarray, num_classes: int, dropout: float, train: bool,
             dtype: Any = None) -> jnp.ndarray:
  """Channel-wise dropout (PyTorch's Dropout2d) then the 1x1 classifier `conv_seg`.

  Call it inside a head's compact `__call__`: the modules become the head's children."""
  x = nn.Dropout(dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
  return layers.Conv(num_classes, (1, 1), dtype=dtype, name="conv_seg")(x)
