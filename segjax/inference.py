"""A small Python API for inference from a workdir.

    seg = Segmenter.from_workdir("runs/quickstart")
    labels = seg.predict(images_uint8_nhwc)          # (N, H, W) uint8 class ids
    logits = seg.logits(images_uint8_nhwc)           # (N, H, W, C) float32

Normalisation, test scale and inference mode (whole / slide / TTA) come from the config saved
with the checkpoint, and the computation is evaluate.Predictor's, so a prediction equals the
one --mode=evaluate scores and --mode=predict writes.
"""
import functools
from typing import Optional, Union

import jax
import ml_collections
import numpy as np

from segjax import checkpoint as ckpt_lib
from segjax import data as data_lib
from segjax import models, parallel
from segjax.evaluate import Predictor, abstract_variables, inference_variables
from segjax.models.layers import resize_bilinear


class Segmenter:

  def __init__(self, config: ml_collections.ConfigDict, variables, step: int = 0):
    self.config = config
    self.step = step
    self.class_names = data_lib.class_names(config.data)
    self.model = models.build_model(config)
    self.variables = variables
    self.predictor = Predictor(self.model, config, parallel.make_mesh(jax.local_devices()[:1]))
    self._resize = jax.jit(functools.partial(resize_bilinear,
                                             align_corners=self.predictor.align_corners),
                           static_argnums=1)

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
    return cls(config, inference_variables(variables), step)

  def logits(self, images: np.ndarray, resize_to_input: bool = True) -> np.ndarray:
    """Float32 logits of uint8 NHWC images of one size, resized to that size; with
    resize_to_input=False, at the test size the model sees (evaluate.Predictor)."""
    images = _check(images)
    logits = self.predictor.logits(self.variables, self.predictor.prepare(images))
    if resize_to_input:
      logits = self._resize(logits, images.shape[1:3])
    return np.asarray(logits)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 class ids of uint8 NHWC images of one size (refined by DeepLab's
    fully connected CRF when the config's eval.crf is on, as evaluation does)."""
    images = _check(images)
    prepared = self.predictor.prepare(images)
    logits = self.predictor.logits(self.variables, prepared)
    return np.asarray(self.predictor.labels(logits, images.shape[1:3], prepared))


def _check(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} "
                     f"{images.shape}")
  return images
