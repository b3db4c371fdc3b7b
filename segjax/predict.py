"""--mode=predict: label PNG, colour PNG and overlay for every image of a folder.

Also the colouring helpers used for TensorBoard and the workdir's overlays/ during training.
"""
import os
from typing import Sequence

import numpy as np
import tqdm
from absl import logging
from PIL import Image

from segjax import data as data_lib
from segjax.data import base
from segjax.errors import ConfigError, DataError


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """uint8 (..., 3) colours of class ids; 255 (ignore) is black."""
  table = np.zeros((256, 3), np.uint8)
  table[:len(palette)] = palette
  return table[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray,
            alpha: float = 0.5) -> np.ndarray:
  blend = image.astype(np.float32) * (1 - alpha) + colorize(labels, palette) * alpha
  return np.clip(blend, 0, 255).astype(np.uint8)


def panel(image, label, pred, palette) -> np.ndarray:
  """image | ground-truth overlay | prediction overlay, side by side."""
  return np.concatenate([image, overlay(image, label, palette), overlay(image, pred, palette)], 1)


def write_prediction(out_dir: str, stem: str, image, labels, palette, alpha: float) -> None:
  Image.fromarray(labels.astype(np.uint8)).save(os.path.join(out_dir, f"{stem}_label.png"))
  Image.fromarray(colorize(labels, palette)).save(os.path.join(out_dir, f"{stem}_color.png"))
  Image.fromarray(overlay(image, labels, palette, alpha)).save(
      os.path.join(out_dir, f"{stem}_overlay.png"))


def predict_folder(config, workdir: str) -> Sequence[str]:
  """Writes <stem>_label.png, <stem>_color.png, <stem>_overlay.png per input image."""
  from segjax.inference import Segmenter  # local: keeps predict importable without a model
  src, dst = config.predict.input, config.predict.output
  if not src or not os.path.isdir(src):
    raise ConfigError(f"predict.input must be a folder of images, got {src!r} "
                      "(--config.predict.input=DIR)")
  if not dst:
    raise ConfigError("predict.output is empty; set --config.predict.output=DIR")
  files = sorted(f for f in os.listdir(src)
                 if os.path.splitext(f)[1].lower() in (".jpg", ".jpeg", ".png", ".bmp"))
  if not files:
    raise DataError(f"{src}: no .jpg/.jpeg/.png/.bmp images")
  os.makedirs(dst, exist_ok=True)
  seg = Segmenter.from_workdir(workdir, config.predict.checkpoint, config)
  palette = data_lib.palette(config.data)
  bar = tqdm.tqdm(files, desc=f"predicting {len(files)} images", unit="image",
                  dynamic_ncols=True)
  for f in bar:
    image = base.read_image(os.path.join(src, f))
    labels = seg.predict(image[None])[0]
    write_prediction(dst, os.path.splitext(f)[0], image, labels, palette, config.predict.alpha)
  # The model compiles once per test size (images resized to eval.scale keeping their aspect
  # ratio), not once per image size; only the cheap resize-back program is per image size.
  logging.info("wrote predictions of %d images to %s (checkpoint step %d; compiled: %s)",
               len(files), dst, seg.step, ", ".join(seg.predictor.compilations))
  return files
