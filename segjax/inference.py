"""A small Python API for inference from a workdir.

    seg = Segmenter.from_workdir("runs/quickstart")
    labels = seg.predict(images_uint8_nhwc)          # (N, H, W) uint8 class ids
    logits = seg.logits(images_uint8_nhwc)           # (N, H, W, C) float32

Normalisation, model and inference mode (whole / slide) come from the config saved with the
checkpoint, so results equal those of --mode=evaluate.
"""
from typing import Optional, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax import checkpoint as ckpt_lib
from segjax import data as data_lib
from segjax import models, parallel
from segjax.evaluate import abstract_variables, make_logits_fn


class Segmenter:

  def __init__(self, config: ml_collections.ConfigDict, variables, step: int = 0):
    self.config = config
    self.step = step
    self.class_names = data_lib.class_names(config.data)
    self.model = models.build_model(config)
    self.variables = variables
    self._mean = jnp.asarray(config.data.mean, jnp.float32)
    self._std = jnp.asarray(config.data.std, jnp.float32)
    full = make_logits_fn(self.model, config.eval, config.data.num_classes)

    def normalise(images):
      return (images.astype(jnp.float32) - self._mean) / self._std

    def raw(variables, images):
      return self.model.apply(variables, normalise(images), train=False)[0].astype(jnp.float32)

    self._full = jax.jit(lambda v, x: full(v, normalise(x)))
    self._raw = jax.jit(raw)
    self._labels = jax.jit(
        lambda v, x: jnp.argmax(full(v, normalise(x)), axis=-1).astype(jnp.uint8))

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: Union[str, int] = "latest",
                   config: Optional[ml_collections.ConfigDict] = None) -> "Segmenter":
    """Loads `checkpoint` ('latest' | 'best' | step) and, unless given, its saved config."""
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
    config = config or checkpointer.saved_config(checkpoint)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    model = models.build_model(config)
    step, variables = checkpointer.restore_model(
        checkpoint, abstract_variables(model, config, mesh))
    checkpointer.close()
    return cls(config, variables, step)

  def logits(self, images: np.ndarray, resize_to_input: bool = True) -> np.ndarray:
    """Float32 logits of uint8 NHWC images: at the input size (config.eval.mode inference) or,
    with resize_to_input=False, the model's raw output (1/4 resolution for SegFormer)."""
    images = _check(images)
    fn = self._full if resize_to_input else self._raw
    return np.asarray(fn(self.variables, images))

  def predict(self, images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 class ids of uint8 NHWC images."""
    return np.asarray(self._labels(self.variables, _check(images)))


def _check(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} "
                     f"{images.shape}")
  return images
