"""A grid of augmented training samples with their masks overlaid, to check a config's data
pipeline (crop, resize, flip, photometric distortion, label mapping) before a long run.

  python -m segjax.tools.browse_data --config=configs/segformer_b1_city.py --output=browse/ \
      [--num=16] [--step=0] [--config.data.root=...]

Writes <output>/train_step<S>.png: one row per sample, (augmented image | mask overlay |
mask colours), exactly the batch the trainer would see at step S (the pipeline is a pure
function of (seed, step)), and prints the class frequencies of those crops.
"""
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from segjax import data as data_lib
from segjax import predict
from segjax.data import pipeline

FLAGS = flags.FLAGS


def define_flags():
  """Flags are defined only when run as a program, so tools import side by side."""
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_string("output", None, "Directory for the grid PNG.")
  flags.DEFINE_integer("num", 16, "Samples to draw.")
  flags.DEFINE_integer("step", 0, "Training step whose batch to draw (from step*num).")


def samples(config, num: int, step: int = 0):
  """`num` augmented (image uint8, mask) pairs: the pipeline's batch at `step` for batch num."""
  source = data_lib.build_source(config.data, config.data.train_split)
  batch = next(pipeline.train_batches(source, config.data, seed=config.seed, global_batch=num,
                                      start_step=step))
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  images = np.clip(batch["image"] * std + mean + 0.5, 0, 255).astype(np.uint8)
  return images, batch["label"]


def grid(images, masks, palette) -> np.ndarray:
  rows = [np.concatenate([im, predict.overlay(im, m, palette), predict.colorize(m, palette)], 1)
          for im, m in zip(images, masks)]
  return np.concatenate(rows, 0)


def main(argv):
  del argv
  if not FLAGS.output:
    raise app.UsageError("--output=DIR is required")
  config = FLAGS.config
  images, masks = samples(config, FLAGS.num, FLAGS.step)
  os.makedirs(FLAGS.output, exist_ok=True)
  path = os.path.join(FLAGS.output, f"train_step{FLAGS.step}.png")
  Image.fromarray(grid(images, masks, data_lib.palette(config.data))).save(path)
  names = data_lib.class_names(config.data)
  counts = np.bincount(masks.ravel(), minlength=256)
  total = counts.sum()
  print(f"wrote {path}: {len(images)} samples of {images.shape[1]}x{images.shape[2]}")
  for c in np.argsort(-counts[:len(names)]):
    if counts[c]:
      print(f"  {names[c]:<20} {100 * counts[c] / total:6.2f}%")
  print(f"  {'(ignored, 255)':<20} {100 * counts[255] / total:6.2f}%")


if __name__ == "__main__":
  define_flags()
  app.run(main)
