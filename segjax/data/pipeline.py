"""tf.data pipelines: deterministic, resumable training batches and padded eval batches.

Training order is a pure function of (seed, step): the infinite stream of examples is the
concatenation of per-epoch permutations (`numpy.random.default_rng([seed, epoch])`), global
batch `s` is stream positions [s*B, (s+1)*B), and host h of H takes the h-th contiguous
slice of every global batch. Augmentation seeds are keyed by (seed, epoch, example index).
So a run resumed at step s sees exactly the batches an uninterrupted run would have seen,
and the global batch does not depend on the number of hosts.

Evaluation follows a plan (`plan_eval`) that groups the split by image size, so images keep
their own size (mmseg's per-image test protocol) while batches stay uniform; every host
walks the same plan, taking its slice of each global batch. Padding examples fill the last
batch of a group with an all-255 mask and valid=False, so they count nowhere.
"""
import dataclasses
import functools
import threading
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from segjax.data import transforms, transforms3d
from segjax.data.base import IGNORE_INDEX, Source
from segjax.errors import ConfigError, DataError


class _Loader:
  """Wraps Source.load for tf.numpy_function and remembers the first DataError.

  tf.data turns a Python exception into an OpError with a long trace; iterate() re-raises
  the original one-line DataError instead.
  """

  def __init__(self, source: Source, check=None):
    """check(index, image, mask) may raise DataError for pipeline-specific limits."""
    self.source = source
    self.check = check
    self.error: Optional[DataError] = None
    self._lock = threading.Lock()

  def __call__(self, index):
    try:
      image, mask = self.source.load(int(index))
      if self.check is not None:
        self.check(int(index), image, mask)
    except DataError as e:
      with self._lock:
        self.error = self.error or e
      raise
    return image, mask

  def tf_load(self, index):
    n = self.source.spatial_dims  # 2: images (H, W, 3) uint8; 3: volumes (D, H, W, C)
    image, mask = tf.numpy_function(self, [index], [tf.as_dtype(self.source.image_dtype),
                                                    tf.uint8], stateful=False)
    image.set_shape([None] * n + [self.source.channels])
    mask.set_shape([None] * n)
    return image, mask


def iterate(ds: tf.data.Dataset, loader: _Loader) -> Iterator[Dict[str, np.ndarray]]:
  """Numpy batches of `ds`; a failing example raises its DataError."""
  it = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      if loader.error is not None:
        raise loader.error from None
      raise DataError(f"data pipeline failed: {e.message.splitlines()[0]}") from None
    yield batch


def _options() -> tf.data.Options:
  """Deterministic order on TF's shared thread pool, with tf.data's autotuner off.

  The autotuner runs a model thread whose optimisation loop sleeps on a timed wait that grows
  to a minute; deleting the iterator waits for that thread. With JAX training on every core
  the wake-up was missed: after SIGTERM, with the checkpoint already saved, a synthetic_city
  run on a loaded 2-core machine took 51-59 s to exit (4 trials; gdb: main thread in
  `~RootDataset::Iterator` waiting on `Model::OptimizeLoop`), longer than a preemptible VM's
  grace period; with the autotuner off, 9.1-9.8 s (a gdb stack dump included).
  Without the autotuner, `AUTOTUNE` map parallelism stays at TF's starting value, min(16,
  cores) (2 concurrent calls on a 2-core machine, as with it); `data.num_parallel_calls` sets
  it explicitly.
  """
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.private_threadpool_size = 0  # shared pool; JAX gets the cores it needs
  opts.autotune.enabled = False
  return opts


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def stream_positions(n: int, seed: int, global_batch: int, start_step: int,
                     process_index: int, process_count: int, shuffle: bool = True):
  """Yields (epoch, example index) of this host's share of steps start_step, start_step+1..."""
  if global_batch % process_count:
    raise ValueError(f"batch size {global_batch} is not divisible by {process_count} hosts")
  local = global_batch // process_count
  k = start_step * local
  while True:
    step, j = divmod(k, local)
    epoch, i = divmod(step * global_batch + process_index * local + j, n)
    yield epoch, int(_permutation(seed, epoch, n)[i]) if shuffle else i
    k += 1


def train_batches(source: Source, data_cfg, *, seed: int, global_batch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite iterator of this host's training batches {"image", "label"} from start_step.

  Volumes (a source with spatial_dims 3) take transforms3d's chain, images transforms'."""
  if len(data_cfg.crop_size) != source.spatial_dims:
    raise ConfigError(f"data.crop_size {tuple(data_cfg.crop_size)} must have "
                      f"{source.spatial_dims} sides for the {source.spatial_dims}-D examples "
                      f"of {data_cfg.name}")
  augment = transforms3d.train_augment if source.spatial_dims == 3 else transforms.train_augment
  loader = _Loader(source)
  local = global_batch // process_count
  positions = functools.partial(stream_positions, len(source), seed, global_batch, start_step,
                                process_index, process_count, data_cfg.shuffle)
  ds = tf.data.Dataset.from_generator(
      positions, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)))

  def example(epoch, index):
    image, mask = loader.tf_load(index)
    key = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int64), epoch]), index)
    image, mask = augment(image, mask, key, data_cfg)
    return {"image": image, "label": mask}

  ds = ds.map(example, num_parallel_calls=data_cfg.num_parallel_calls or tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2).with_options(_options())
  return iterate(ds, loader)


@dataclasses.dataclass(frozen=True)
class EvalBatch:
  """One global eval batch of the plan: images of one original size, predicted at one size.

  indices holds `global_batch` example indices, -1 for padding examples (all-ignore labels,
  valid=False) that fill the last batch of a size group.
  """
  input_size: Tuple[int, int]  # (h, w) the model sees: the original resized to the test scale
  label_size: Tuple[int, int]  # (h, w) of the original image and mask, where scoring happens
  indices: Tuple[int, ...]


def plan_eval(source: Source, scale: Sequence[int], global_batch: int) -> List[EvalBatch]:
  """Groups a split by (test size, original size) and cuts each group into global batches.

  Sizes come from Source.size (file headers), so every host computes the same plan without
  reading pixels and runs the same sequence of compiled programs. Groups are ordered by size
  and images by index, so the plan is a pure function of the split.
  """
  groups: Dict[Tuple, List[int]] = {}
  for i in range(len(source)):
    hw = tuple(int(x) for x in source.size(i))
    # No scale (volumes): predicted at their own size.
    groups.setdefault((transforms.keep_ratio_size(hw, scale) if scale else hw, hw),
                      []).append(i)
  plan = []
  for (input_size, label_size), indices in sorted(groups.items()):
    for k in range(0, len(indices), global_batch):
      chunk = indices[k:k + global_batch]
      plan.append(EvalBatch(input_size, label_size,
                            tuple(chunk) + (-1,) * (global_batch - len(chunk))))
  return plan


def eval_batches(source: Source, plan: Sequence[EvalBatch], *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Dict[str, np.ndarray]]:
  """This host's share of every batch of `plan`: {"image", "label", "valid", "index"}.

  Host h takes the h-th contiguous slice of each global batch. Images are float32 in 0..255
  at the batch's input size (resized with transforms.resize_image; normalisation happens on
  the device, as for Segmenter); labels are the original masks, never resized. Volumes
  (D, H, W, C) are never resized: their plan's input size is their own.
  """
  n = source.spatial_dims
  global_batch = len(plan[0].indices) if plan else process_count
  if global_batch % process_count:
    raise ValueError(f"eval batch {global_batch} is not divisible by {process_count} hosts")
  local = global_batch // process_count
  rows = [(i,) + b.input_size + b.label_size for b in plan
          for i in b.indices[process_index * local:(process_index + 1) * local]]

  planned = {b_i: b.label_size for b in plan for b_i in b.indices if b_i >= 0}

  def fits_plan(index, image, mask):
    del mask
    expected = planned[index]  # from Source.size when planning; not read a second time
    if tuple(image.shape[:n]) != expected and n == 3:
      raise DataError(f"example {source.name(index)}: a volume of {image.shape[:3]} (DxHxW) "
                      f"but its source's size says {expected}")
    if tuple(image.shape[:n]) != expected:
      raise DataError(f"example {source.name(index)}: decoded as {image.shape[1]}x"
                      f"{image.shape[0]} (WxH) but its header says {expected[1]}x{expected[0]}")

  loader = _Loader(source, check=fits_plan)

  def example(row):
    index, input_size, label_size = row[0], row[1:1 + n], row[1 + n:]

    def real():
      image, mask = loader.tf_load(index)
      if n == 3:
        return tf.cast(image, tf.float32), mask
      return transforms.resize_image(image, tf.cast(input_size, tf.int32)), mask

    def pad():
      return (tf.zeros(tf.concat([input_size, [source.channels]], 0), tf.float32),
              tf.fill(label_size, tf.constant(IGNORE_INDEX, tf.uint8)))

    image, mask = tf.cond(index >= 0, real, pad)
    return {"image": image, "label": mask, "valid": index >= 0, "index": index}

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(rows, tf.int64,
                                                     shape=[len(rows), 1 + 2 * n]))
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2).with_options(_options())
  return iterate(ds, loader)
