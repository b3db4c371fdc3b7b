"""Inference and evaluation with mmseg's per-image test protocol, compiled.

A prediction, the one definition shared by training-time evaluation, --mode=evaluate,
--mode=predict and segjax.inference.Segmenter (`Predictor`):
  1. the image is resized to fit the test scale keeping its aspect ratio (mmseg's test
     Resize(scale, keep_ratio=True); `eval.scale`, by default data.base_size, the training
     base scale, as in mmseg's configs),
  2. normalised and predicted at that size: the whole image, or sliding windows over the image
     itself (never past its edges; an image smaller than the window is one window), optionally
     multi-scale + flip,
  3. the logits are resized bilinearly to the original size and arg-maxed there, and scored
     against the original-resolution mask.
Nothing is padded inside the model's view. To stay compiled, evaluation groups images by
(test size, original size) (`pipeline.plan_eval`): each distinct size compiles once (logged),
images of one size are batched and sharded over all devices, and padding *examples* fill a
group's last batch and count nowhere. Confusion matrices are summed on the host in int64.
"""
import functools
import json
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from segjax import checkpoint as ckpt_lib
from segjax import crf as crf_lib
from segjax import data as data_lib
from segjax import metrics as metrics_lib
from segjax import models, parallel
from segjax import workdir as workdir_lib
from segjax.data import pipeline, transforms
from segjax.errors import ConfigError
from segjax.models.layers import resize_bilinear, resize_linear


def spatial_dims(config) -> int:
  """2 for images (data.crop_size (h, w)), 3 for volumes ((d, h, w): V-Net's CT/MRI), which
  are predicted whole at their own size and scored voxel by voxel. Boundary IoU, slide
  windows, test-time scales and flips are 2-D image protocols and refused or skipped there."""
  n = len(config.data.crop_size)
  if n not in (2, 3):
    raise ConfigError(f"data.crop_size must be (h, w) or (d, h, w), got "
                      f"{tuple(config.data.crop_size)}")
  return n


def input_shape(config) -> Tuple[int, ...]:
  """(1, *data.crop_size, channels), the input a model is initialised with: the channels are
  those data.mean normalises (3 for RGB images, 1 for single-channel volumes)."""
  return (1, *(int(s) for s in config.data.crop_size), len(config.data.mean))


def slide_windows(h: int, w: int, crop: Tuple[int, int], stride: Tuple[int, int]):
  """Top-left corners of mmseg's sliding windows (EncoderDecoder.slide_inference) over an
  (h, w) image; windows are min(crop, image) in size and never extend past the image."""
  (ch, cw), (sh, sw) = crop, stride
  rows = max(h - ch + sh - 1, 0) // sh + 1
  cols = max(w - cw + sw - 1, 0) // sw + 1
  corners = []
  for r in range(rows):
    for c in range(cols):
      y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
      corners.append((max(y2 - ch, 0), max(x2 - cw, 0)))
  return corners


def corners_aligned(model) -> bool:
  """Whether the model's logits are upsampled with corners aligned (mmseg's decode head
  `align_corners=True`, e.g. STDC's): the first of an EncoderDecoder's `align_corners`."""
  return tuple(getattr(model, "align_corners", ()))[:1] == (True,)


def make_logits_fn(model, eval_cfg, num_classes: int) -> Callable:
  """Returns f(variables, images) -> float32 logits (B, H, W, C) at the images' size.

  `images` are normalised. whole: one forward pass, logits resized to the input. slide:
  windows of eval.crop_size every eval.stride over the image (an image smaller than the window
  is one window of its own size, as in mmseg), all windows of the batch in one batched
  forward pass; overlapping logits are averaged. With eval.scales other than
  (1.0,) or eval.flip, the result is the log of the class probabilities averaged over the
  rescaled/flipped views (same argmax semantics as logits). All of it is one jitted program.
  """
  base = _single_scale_fn(model, eval_cfg, num_classes)
  aligned = corners_aligned(model)  # views' logits go back to the image as mmseg resizes them
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
        total = total + jax.nn.softmax(resize_bilinear(logits, (h, w), aligned), axis=-1)
    return jnp.log(total / (len(scales) * (2 if flip else 1)))

  return augmented


def _single_scale_fn(model, eval_cfg, num_classes: int) -> Callable:
  """Whole-image or sliding-window logits at the input size, for one scale."""
  aligned = corners_aligned(model)

  def whole(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return resize_linear(logits.astype(jnp.float32), images.shape[1:-1], aligned)

  if eval_cfg.mode == "whole":
    return whole
  if eval_cfg.mode != "slide":
    raise ConfigError(f"eval.mode must be 'whole' or 'slide', got {eval_cfg.mode!r}")
  crop, stride = tuple(eval_cfg.crop_size), tuple(eval_cfg.stride)
  if min(stride) <= 0 or stride[0] > crop[0] or stride[1] > crop[1]:
    raise ConfigError(f"eval.stride {stride} must be positive and at most eval.crop_size {crop}")

  def slide(variables, images):
    windows = cut_windows(images, crop, stride)
    return paste_windows(whole(variables, windows), images.shape[:3], crop, stride)

  return slide


def cut_windows(images: jax.Array, crop, stride) -> jax.Array:
  """(B, h, w, 3) -> (B * K, wh, ww, 3): the K slide windows of every image, image-major."""
  b, h, w, _ = images.shape
  wh, ww = min(crop[0], h), min(crop[1], w)  # mmseg: a small image is one window
  corners = slide_windows(h, w, crop, stride)
  windows = jnp.stack([images[:, y:y + wh, x:x + ww] for y, x in corners], axis=1)
  return windows.reshape((b * len(corners),) + windows.shape[2:])


def paste_windows(logits: jax.Array, bhw, crop, stride) -> jax.Array:
  """Window logits (>= B * K, wh, ww, C; extra rows ignored) -> (B, h, w, C), overlaps
  averaged (mmseg's count_mat)."""
  b, h, w = bhw
  wh, ww = min(crop[0], h), min(crop[1], w)
  corners = slide_windows(h, w, crop, stride)
  logits = logits[:b * len(corners)].reshape((b, len(corners)) + logits.shape[1:])
  total = jnp.zeros((b, h, w, logits.shape[-1]), jnp.float32)
  count = np.zeros((1, h, w, 1), np.float32)
  for k, (y, x) in enumerate(corners):
    total = total.at[:, y:y + wh, x:x + ww].add(logits[:, k])
    count[:, y:y + wh, x:x + ww] += 1
  return total / count


def test_scale(config) -> Tuple[int, ...]:
  """The (h, w) box images are resized into for testing: eval.scale, else data.base_size."""
  if spatial_dims(config) == 3:
    if config.eval.get("scale", ()):
      raise ConfigError(f"eval.scale={tuple(config.eval.scale)}: volumes are predicted at their "
                        "own size; set eval.scale=()")
    return ()
  scale = tuple(config.eval.get("scale", ()) or ()) or tuple(config.data.base_size)
  if len(scale) != 2 or min(scale) <= 0:
    raise ConfigError(f"eval.scale must be (h, w) with positive sides (or () for "
                      f"data.base_size), got {scale}")
  return scale


class Predictor:
  """The compiled prediction of `config` (see the module docstring), over `mesh`.

  Separate jitted programs, so the expensive one compiles once per test size (once per window
  size in slide mode without TTA), not per original size: `logits` (normalise + model,
  whole/slide/TTA, at the test size) and `labels` (resize the logits to the original size,
  argmax). `compilations` lists the model/scoring shapes compiled.
  """

  def __init__(self, model, config, mesh):
    self.model, self.mesh = model, mesh
    self.num_classes = config.data.num_classes
    self.scale = test_scale(config)
    self.compilations: List[str] = []
    self._seen = set()
    # DeepLab's fully connected CRF on the labels (eval.crf; None = off): see `to_labels`.
    self.crf = crf_lib.params_from_config(config.eval.get("crf"))
    if self.crf is not None and len(config.data.crop_size) != 2:
      raise ConfigError("eval.crf refines RGB images, not volumes: set eval.crf.enabled=False")
    if spatial_dims(config) == 3 and (
        config.eval.mode != "whole" or config.eval.get("flip", False)
        or tuple(config.eval.get("scales", (1.0,))) != (1.0,)):
      raise ConfigError("volumes are evaluated whole without test-time augmentation: set "
                        "eval.mode='whole', eval.flip=False, eval.scales=(1.0,)")
    logits_fn = make_logits_fn(model, config.eval, self.num_classes)
    mean = jnp.asarray(config.data.mean, jnp.float32)
    std = jnp.asarray(config.data.std, jnp.float32)
    # Variables stay as placed (None): replicated, or split over the fsdp axis as training
    # keeps them (segjax.parallel), XLA then gathering each layer's weights where used.
    shard = parallel.batch_sharded(mesh)
    self._logits = jax.jit(lambda variables, images: logits_fn(variables, (images - mean) / std),
                           in_shardings=(None, shard), out_shardings=shard)
    self.align_corners = corners_aligned(model)
    self._labels = jax.jit(functools.partial(to_labels, crf=self.crf, mesh=mesh,
                                             align_corners=self.align_corners),
                           static_argnums=1, in_shardings=(shard, shard), out_shardings=shard)
    # Sliding windows without test-time augmentation run as three programs, so that the
    # model compiles once per window size (every image larger than the window) rather than
    # once per image size: cut (per size), the model on fixed chunks of `eval.batch_size`
    # windows, paste (per size). With TTA the fused program above is used.
    eval_cfg = config.eval
    self._split_slide = (eval_cfg.mode == "slide" and not eval_cfg.get("flip", False)
                         and tuple(eval_cfg.get("scales", (1.0,))) == (1.0,))
    if self._split_slide:
      crop, stride = tuple(eval_cfg.crop_size), tuple(eval_cfg.stride)
      chunk = int(eval_cfg.batch_size)
      chunked = jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(None, parallel.BATCH_AXES))

      def cut(images):
        windows = cut_windows((images - mean) / std, crop, stride)
        n = -(-windows.shape[0] // chunk) * chunk
        windows = jnp.pad(windows, ((0, n - windows.shape[0]),) + ((0, 0),) * 3)
        return windows.reshape((n // chunk, chunk) + windows.shape[1:])

      def forward(variables, windows):
        logits, _ = model.apply(variables, windows, train=False)
        return resize_bilinear(logits.astype(jnp.float32), windows.shape[1:3],
                               self.align_corners)

      self._cut = jax.jit(cut, in_shardings=(shard,), out_shardings=chunked)
      self._forward = jax.jit(forward, in_shardings=(None, shard), out_shardings=shard)
      self._paste = jax.jit(
          lambda chunks, bhw: paste_windows(jnp.concatenate(chunks), bhw, crop, stride),
          static_argnums=1, out_shardings=shard)

  def input_size(self, hw: Sequence[int]) -> Tuple[int, int]:
    """The size the model sees for an image of size hw."""
    return transforms.keep_ratio_size(hw, self.scale)

  def prepare(self, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 at the test size, exactly as the eval pipeline does."""
    size = self.input_size(images.shape[1:3])
    return np.asarray(transforms.resize_image(images, size))

  def logits(self, variables, images) -> jax.Array:
    """float32 0..255 images at the test size -> logits at that size."""
    if not self._split_slide:
      self.note("model", tuple(images.shape[1:-1]))
      return self._logits(variables, images)
    windows = self._cut(images)
    self.note("model", tuple(windows.shape[2:4]))
    chunks = tuple(self._forward(variables, windows[i]) for i in range(windows.shape[0]))
    return self._paste(chunks, tuple(images.shape[:3]))

  def labels(self, logits, size: Sequence[int], images=None) -> jax.Array:
    """uint8 class ids at `size` (h, w), the original image size. `images`: the float32
    0..255 images `logits` were predicted from, which eval.crf needs."""
    if self.crf is not None and images is None:
      raise ValueError("eval.crf is on: Predictor.labels needs the images")
    self.note("labels", tuple(logits.shape[1:-1]) + tuple(size))
    return self._labels(logits, tuple(int(x) for x in size), images)

  def note(self, kind: str, shape: Tuple[int, ...]) -> None:
    """Records (and logs) the first use of a program for a shape: a compilation. kind:
    "model" (shape: test size) or "labels"/"score" (test size + original size)."""
    if (kind, shape) not in self._seen:
      self._seen.add((kind, shape))
      half = len(shape) if kind == "model" else len(shape) // 2
      what = "x".join(map(str, shape[:half]))
      if kind != "model":
        what += " -> " + "x".join(map(str, shape[half:]))
      self.compilations.append(f"{kind} {what}")
      logging.info("compiling %s for %s", "inference" if kind == "model" else kind, what)


def to_labels(logits: jax.Array, size: Tuple[int, int], images: Optional[jax.Array] = None,
              crf: Optional[crf_lib.CRFParams] = None, mesh=None,
              align_corners: bool = False) -> jax.Array:
  """Logits at any size -> uint8 class ids at `size`: bilinear resize first, then argmax
  (mmseg's postprocess_result).

  With `crf`, the argmax of the fully connected CRF's marginals (DeepLab v1/v2's
  post-processing, segjax.crf) at `size`, refined against `images` (float32 0..255, the
  images the logits were predicted from) resized to `size` as the logits are: the original
  image itself when the test size is the original size, else that image resampled twice.
  Every image is refined on its own, so a batch's padding examples touch no real one.
  align_corners: the model's (`corners_aligned`), as mmseg resizes back to the original size
  with its decode head's.
  """
  logits = resize_linear(logits, size, align_corners)
  if crf is not None:
    logits = crf_marginals(logits, resize_bilinear(images, size), crf, mesh)
  return jnp.argmax(logits, axis=-1).astype(jnp.uint8)


def crf_marginals(logits: jax.Array, images: jax.Array, crf: crf_lib.CRFParams,
                  mesh=None) -> jax.Array:
  """segjax.crf.refine_logits of a batch; over a `mesh`, every device refines its own
  images (a shard_map: a lax.map over the batch axis of a global array would gather it)."""
  refine = functools.partial(crf_lib.refine_logits, params=crf)
  if mesh is None:
    return refine(logits, images)
  spec = jax.sharding.PartitionSpec(parallel.BATCH_AXES)
  return jax.shard_map(refine, mesh=mesh, in_specs=(spec, spec), out_specs=spec,
                       check_vma=False)(logits, images)  # no collectives inside


class Evaluator:
  """Evaluates variables on one split: the plan's batches, one int64 confusion matrix."""

  # Batches whose counts may wait on the device before the host adds them up: the host
  # stays this far behind the dispatched computation instead of syncing on every batch.
  LAG = 3

  def __init__(self, model, config, mesh, source: data_lib.Source):
    self.config, self.mesh, self.source = config, mesh, source
    self.num_classes = config.data.num_classes
    parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    self.predictor = Predictor(model, config, mesh)
    # Boundary IoU's bands are 2-D (Cheng et al. define them on image masks): not on volumes.
    self.boundary = bool(config.eval.get("boundary_iou", True)) and spatial_dims(config) == 2
    self._plan = None
    num_classes = self.num_classes
    boundary = self.boundary
    crf = self.predictor.crf
    aligned = self.predictor.align_corners

    def score(logits, labels, valid, images):
      preds = to_labels(logits, labels.shape[1:], images, crf, mesh, aligned)
      cm = metrics_lib.confusion_matrix(preds, labels, num_classes)
      counts = (metrics_lib.boundary_counts(preds, labels, num_classes) if boundary else ())
      return preds, cm, counts, jnp.sum(valid.astype(jnp.int32))

    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    self._score = jax.jit(score, in_shardings=(shard, shard, shard, shard),
                          out_shardings=(shard, rep, rep, rep))

    def step(variables, batch):
      logits = self.predictor.logits(variables, batch["image"])
      self.predictor.note("score", tuple(logits.shape[1:-1]) + tuple(batch["label"].shape[1:]))
      return self._score(logits, batch["label"], batch["valid"], batch["image"])

    self._step = step

  def plan(self):
    """The split's size groups cut into global batches (computed once; reads headers)."""
    if self._plan is None:
      self._plan = pipeline.plan_eval(self.source, self.predictor.scale,
                                      self.config.eval.batch_size)
      sizes = {(b.input_size, b.label_size) for b in self._plan}
      logging.info("evaluation plan: %d images in %d size group(s), %d batches of %d",
                   len(self.source), len(sizes), len(self._plan), self.config.eval.batch_size)
    return self._plan

  def __call__(self, variables, num_keep: int = 0, progress: bool = False):
    """Returns (metrics dict, kept examples) where kept = [(image uint8, label, pred)].

    metrics include "confusion_matrix" (int64 numpy, rows = ground truth) and the per-class
    tables of metrics.summarize.
    """
    start = time.time()
    plan = self.plan()
    totals = {"cm": np.zeros((self.num_classes,) * 2, np.int64),
              "inter": np.zeros(self.num_classes, np.int64),
              "union": np.zeros(self.num_classes, np.int64), "count": 0}
    pending, kept = [], []

    def fold(item):
      cm, counts, count = jax.device_get(item)
      totals["cm"] += np.asarray(cm, np.int64)
      if counts:
        totals["inter"] += np.asarray(counts[0], np.int64)
        totals["union"] += np.asarray(counts[1], np.int64)
      totals["count"] += int(count)

    batches = pipeline.eval_batches(self.source, plan, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    bar = _progress(len(plan), f"evaluating {len(self.source)} images") if progress else None
    for local in batches:
      batch = parallel.global_batch(
          {k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      preds, cm, counts, count = self._step(variables, batch)
      pending.append((cm, counts, count))
      if len(pending) > self.LAG:
        fold(pending.pop(0))
      if len(kept) < num_keep and jax.process_index() == 0:
        kept += self._keep(local, preds, num_keep - len(kept))
      if bar is not None:
        bar.update(1)
    for item in pending:
      fold(item)
    if bar is not None:
      bar.close()
    boundary = (totals["inter"], totals["union"]) if self.boundary else None
    results = metrics_lib.summarize(totals["cm"], self.source.class_names, boundary=boundary)
    results["num_images"] = totals["count"]
    results["seconds"] = round(time.time() - start, 2)
    results["confusion_matrix"] = totals["cm"]
    if totals["count"] != len(self.source):
      raise AssertionError(f"evaluated {totals['count']} images but the split has "
                           f"{len(self.source)}")
    return results, kept

  def _keep(self, local, preds, n):
    """Images (resized back to their original size for display), labels and predictions of
    this host's valid examples."""
    local_preds = np.concatenate(
        [np.asarray(s.data) for s in sorted(preds.addressable_shards,
                                            key=lambda s: s.index[0].start or 0)])
    out = []
    for i in np.flatnonzero(local["valid"])[:n]:
      label = local["label"][i]
      if label.ndim == 3:  # a volume: its middle slice along depth, grey, min-max scaled
        mid = label.shape[0] // 2
        grey = local["image"][i][mid, ..., 0]
        grey = (grey - grey.min()) * (255.0 / max(float(grey.max() - grey.min()), 1e-6))
        out.append((np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8), label[mid],
                    local_preds[i][mid]))
        continue
      image = np.asarray(transforms.resize_image(local["image"][i], label.shape))
      out.append((np.clip(image + 0.5, 0, 255).astype(np.uint8), label, local_preds[i]))
    return out


def _progress(total: int, desc: str):
  """A tqdm bar on process 0 (evaluate and predict modes); None elsewhere."""
  if jax.process_index() != 0:
    return None
  import tqdm  # local: only the interactive modes draw bars
  return tqdm.tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True)


def write_results(path, step: int, results: Dict, class_names: Sequence[str]) -> None:
  """Writes {"step", "metrics", "class_names", "confusion_matrix"} atomically: a reader (or a
  crash) never sees a half-written file. The matrix (rows = ground truth, columns =
  prediction, pixel counts) is what `segjax.tools.confusion_matrix` plots."""
  metrics = {k: v for k, v in results.items() if k != "confusion_matrix"}
  payload = {"step": int(step), "metrics": metrics, "class_names": list(class_names)}
  if "confusion_matrix" in results:
    payload["confusion_matrix"] = np.asarray(results["confusion_matrix"]).tolist()
  workdir_lib.atomic_write_text(path, json.dumps(payload, indent=2))


def log_results(step: int, results: Dict, class_names: Sequence[str]) -> None:
  """The per-class table and the summary line, as mmseg prints them after an evaluation."""
  logging.info("step %d per-class results:\n%s", step,
               metrics_lib.format_table(results, class_names))


def evaluate_workdir(config, workdir: str) -> Dict:
  """--mode=evaluate: restores config.eval.checkpoint from workdir and evaluates it.

  Results go to <workdir>/eval_step<N>.json so the training run's eval_results.json is never
  overwritten; they equal the numbers training logged at that step.
  """
  mesh = parallel.mesh_for(config)
  model = models.build_model(config)
  source = data_lib.build_source(config.data, config.data.eval_split)
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  target = abstract_variables(model, config, mesh)
  step, variables = checkpointer.restore_model(config.eval.checkpoint, target)
  variables = inference_variables(variables)
  logging.info("evaluating %s checkpoint at step %d on %s/%s (%d images)",
               config.eval.checkpoint, step, config.data.name, config.data.eval_split,
               len(source))
  results, _ = Evaluator(model, config, mesh, source)(variables, progress=True)
  if jax.process_index() == 0:
    path = epath.Path(workdir) / f"eval_step{step}.json"
    write_results(path, step, results, source.class_names)
    log_results(step, results, source.class_names)
    logging.info("step %d: mIoU %.4f  mAcc %.4f  aAcc %.4f -> %s", step, results["mIoU"],
                 results["mAcc"], results["aAcc"], path)
  checkpointer.close()
  return {"step": step, **results}


def abstract_variables(model, config, mesh):
  """Shapes of a checkpoint's model item ({"params", "batch_stats"}, and "ema" when
  optim.ema_decay > 0) placed over the mesh as training places them (replicated, or split
  over the fsdp axis), without computing them."""
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(input_shape(config), jnp.float32),
                         train=False))
  shapes = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
  if config.optim.get("ema_decay", 0.0) > 0:
    shapes["ema"] = {"params": shapes["params"]}
  return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes, parallel.state_shardings(shapes, mesh, config))


def inference_variables(variables):
  """The variables to predict with: the moving average of the weights when the run kept one
  (optim.ema_decay > 0), else the weights themselves."""
  if "ema" not in variables:
    return variables
  return {"params": variables["ema"]["params"], "batch_stats": variables["batch_stats"]}
