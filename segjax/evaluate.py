"""Inference (whole image or sliding window, each one jitted program) and evaluation.

`make_logits_fn` is the one definition of "the model's prediction for an image" shared by
training-time evaluation, --mode=evaluate, --mode=predict and segjax.inference, so all four
agree by construction.
"""
import json
import time
from typing import Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from segjax import checkpoint as ckpt_lib
from segjax import data as data_lib
from segjax import metrics as metrics_lib
from segjax import models, parallel
from segjax import workdir as workdir_lib
from segjax.data import pipeline
from segjax.errors import ConfigError
from segjax.models.layers import resize_bilinear


def slide_windows(h: int, w: int, crop: Tuple[int, int], stride: Tuple[int, int]):
  """Top-left corners of mmseg's sliding windows over an (h, w) image at least crop-sized."""
  (ch, cw), (sh, sw) = crop, stride
  rows = max(h - ch + sh - 1, 0) // sh + 1
  cols = max(w - cw + sw - 1, 0) // sw + 1
  corners = []
  for r in range(rows):
    for c in range(cols):
      y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
      corners.append((max(y2 - ch, 0), max(x2 - cw, 0)))
  return corners


def make_logits_fn(model, eval_cfg, num_classes: int) -> Callable:
  """Returns f(variables, images) -> float32 logits (B, H, W, C) at the images' size.

  whole: one forward pass, logits resized to the input. slide: windows of eval.crop_size
  every eval.stride (images smaller than a window are zero-padded), all windows of the batch
  in one batched forward pass; overlapping logits are averaged. With eval.scales other than
  (1.0,) or eval.flip, the result is the log of the class probabilities averaged over the
  rescaled/flipped views (same argmax semantics as logits). All of it is one jitted program.
  """
  base = _single_scale_fn(model, eval_cfg, num_classes)
  scales = tuple(float(x) for x in eval_cfg.get("scales", (1.0,)))
  flip = bool(eval_cfg.get("flip", False))
  if scales == (1.0,) and not flip:
    return base
  if not scales or min(scales) <= 0:
    raise ConfigError(f"eval.scales must be positive ratios, got {scales}")

  def augmented(variables, images):
    """mmseg test-time augmentation: average class probabilities over rescaled (and
    horizontally flipped) copies, each resized back; returns log-probabilities."""
    h, w = images.shape[1:3]
    total = 0.0
    for scale in scales:
      scaled = resize_bilinear(images, (max(int(h * scale + 0.5), 1), max(int(w * scale + 0.5), 1)))
      views = [(scaled, False)] + ([(scaled[:, :, ::-1], True)] if flip else [])
      for view, flipped in views:
        logits = base(variables, view)
        logits = logits[:, :, ::-1] if flipped else logits
        total = total + jax.nn.softmax(resize_bilinear(logits, (h, w)), axis=-1)
    return jnp.log(total / (len(scales) * (2 if flip else 1)))

  return augmented


def _single_scale_fn(model, eval_cfg, num_classes: int) -> Callable:
  """Whole-image or sliding-window logits at the input size, for one scale."""
  def whole(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return resize_bilinear(logits.astype(jnp.float32), images.shape[1:3])

  if eval_cfg.mode == "whole":
    return whole
  if eval_cfg.mode != "slide":
    raise ConfigError(f"eval.mode must be 'whole' or 'slide', got {eval_cfg.mode!r}")
  crop, stride = tuple(eval_cfg.crop_size), tuple(eval_cfg.stride)
  if min(stride) <= 0 or stride[0] > crop[0] or stride[1] > crop[1]:
    raise ConfigError(f"eval.stride {stride} must be positive and at most eval.crop_size {crop}")

  def slide(variables, images):
    b, h, w, _ = images.shape
    hp, wp = max(h, crop[0]), max(w, crop[1])
    images = jnp.pad(images, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    corners = slide_windows(hp, wp, crop, stride)
    windows = jnp.stack([images[:, y:y + crop[0], x:x + crop[1]] for y, x in corners], axis=1)
    logits = whole(variables, windows.reshape((b * len(corners),) + windows.shape[2:]))
    logits = logits.reshape((b, len(corners)) + logits.shape[1:])
    total = jnp.zeros((b, hp, wp, num_classes), jnp.float32)
    count = np.zeros((1, hp, wp, 1), np.float32)
    for k, (y, x) in enumerate(corners):
      total = total.at[:, y:y + crop[0], x:x + crop[1]].add(logits[:, k])
      count[:, y:y + crop[0], x:x + crop[1]] += 1
    return (total / count)[:, :h, :w]

  return slide


class Evaluator:
  """Evaluates variables on one split: a jitted step per batch, one confusion matrix."""

  def __init__(self, model, config, mesh, source: data_lib.Source):
    self.config, self.mesh, self.source = config, mesh, source
    self.num_classes = config.data.num_classes
    parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    logits_fn = make_logits_fn(model, config.eval, self.num_classes)

    def step(variables, batch):
      preds = jnp.argmax(logits_fn(variables, batch["image"]), axis=-1)
      cm = metrics_lib.confusion_matrix(preds, batch["label"], self.num_classes)
      return cm, jnp.sum(batch["valid"].astype(jnp.int32)), preds.astype(jnp.uint8)

    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    self._step = jax.jit(step, in_shardings=(rep, shard), out_shardings=(rep, rep, shard))

  def __call__(self, variables, num_keep: int = 0):
    """Returns (metrics dict, kept examples) where kept = [(image uint8, label, pred)]."""
    start = time.time()
    cm, count, kept = None, None, []
    batches = pipeline.eval_batches(
        self.source, self.config.data, global_batch=self.config.eval.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    for local in batches:
      batch = parallel.global_batch(
          {k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      batch_cm, batch_count, preds = self._step(variables, batch)
      # Summed on device: no host sync per batch, dispatch stays ahead of compute.
      cm = batch_cm if cm is None else cm + batch_cm
      count = batch_count if count is None else count + batch_count
      if len(kept) < num_keep and jax.process_index() == 0:
        kept += self._keep(local, preds, num_keep - len(kept))
    cm, count = np.asarray(jax.device_get(cm)), int(count)
    results = metrics_lib.summarize(cm, self.source.class_names)
    results["num_images"] = count
    results["seconds"] = round(time.time() - start, 2)
    if count != len(self.source):
      raise AssertionError(f"evaluated {count} images but the split has {len(self.source)}")
    return results, kept

  def _keep(self, local, preds, n):
    """Un-normalised images with labels and predictions of this host's valid examples."""
    mean, std = np.array(self.config.data.mean), np.array(self.config.data.std)
    local_preds = np.concatenate(
        [np.asarray(s.data) for s in sorted(preds.addressable_shards,
                                            key=lambda s: s.index[0].start or 0)])
    out = []
    for i in np.flatnonzero(local["valid"])[:n]:
      image = np.clip(local["image"][i] * std + mean, 0, 255).astype(np.uint8)
      out.append((image, local["label"][i], local_preds[i]))
    return out


def write_results(path, step: int, results: Dict, class_names: List[str]) -> None:
  """Writes {"step", "metrics", "class_names"} atomically: a reader (or a crash) never sees a
  half-written file."""
  payload = {"step": int(step), "metrics": results, "class_names": list(class_names)}
  workdir_lib.atomic_write_text(path, json.dumps(payload, indent=2))


def evaluate_workdir(config, workdir: str) -> Dict:
  """--mode=evaluate: restores config.eval.checkpoint from workdir and evaluates it.

  Results go to <workdir>/eval_step<N>.json so the training run's eval_results.json is never
  overwritten; they equal the numbers training logged at that step.
  """
  mesh = parallel.make_mesh()
  model = models.build_model(config)
  source = data_lib.build_source(config.data, config.data.eval_split)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  target = abstract_variables(model, config, mesh)
  step, variables = checkpointer.restore_model(config.eval.checkpoint, target)
  logging.info("evaluating %s checkpoint at step %d on %s/%s (%d images)",
               config.eval.checkpoint, step, config.data.name, config.data.eval_split,
               len(source))
  results, _ = Evaluator(model, config, mesh, source)(variables)
  if jax.process_index() == 0:
    path = epath.Path(workdir) / f"eval_step{step}.json"
    write_results(path, step, results, source.class_names)
    logging.info("step %d: mIoU %.4f  mAcc %.4f  aAcc %.4f -> %s", step, results["mIoU"],
                 results["mAcc"], results["aAcc"], path)
  checkpointer.close()
  return {"step": step, **results}


def abstract_variables(model, config, mesh):
  """Shapes of {"params", "batch_stats"}, replicated over the mesh, without computing them."""
  h, w = config.data.crop_size
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, 3), jnp.float32), train=False))
  shapes = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
  rep = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
