"""Pixel-wise losses. Logits are resized to the label resolution first (mmseg semantics)."""
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from segjax.models.layers import resize_bilinear

IGNORE_INDEX = 255


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX
                  ) -> jax.Array:
  """Mean softmax cross-entropy over the pixels whose label is not `ignore_index`.

  logits: (B, h, w, C) at any resolution; labels: (B, H, W) integer class ids.
  The mean is over the whole (global) batch, so it is the same on 1 or 8 devices.
  """
  logits = resize_bilinear(logits, labels.shape[1:3]).astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)


def segmentation_loss(logits, aux_logits: Sequence[jax.Array], labels,
                      aux_weights: Sequence[float]):
  """Main loss plus weighted auxiliary losses; returns (total, {name: value})."""
  main = cross_entropy(logits, labels)
  parts = {"loss_main": main}
  total = main
  for i, (aux, w) in enumerate(zip(aux_logits, aux_weights, strict=True)):
    parts[f"loss_aux{i}"] = cross_entropy(aux, labels)
    total = total + w * parts[f"loss_aux{i}"]
  return total, parts
