"""tf.data pipelines: deterministic, resumable training batches and padded eval batches.

Training order is a pure function of (seed, step): the infinite stream of examples is the
concatenation of per-epoch permutations (`numpy.random.default_rng([seed, epoch])`), global
batch `s` is stream positions [s*B, (s+1)*B), and host h of H takes the h-th contiguous
slice of every global batch. Augmentation seeds are keyed by (seed, epoch, example index).
So a run resumed at step s sees exactly the batches an uninterrupted run would have seen,
and the global batch does not depend on the number of hosts.

Evaluation gives host h the examples h, h+H, h+2H, ... and pads every host to the same number
of batches; padding examples have an all-255 mask and valid=False, so they count nowhere.
"""
import functools
import math
import threading
from typing import Dict, Iterator, Optional

import numpy as np
import tensorflow as tf

from segjax.data import transforms
from segjax.data.base import IGNORE_INDEX, Source
from segjax.errors import DataError


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
    image, mask = tf.numpy_function(self, [index], [tf.uint8, tf.uint8], stateful=False)
    image.set_shape([None, None, 3])
    mask.set_shape([None, None])
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
  opts = tf.data.Options()
  opts.deterministic = True
  opts.threading.private_threadpool_size = 0  # shared pool; JAX gets the cores it needs
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
  """Infinite iterator of this host's training batches {"image", "label"} from start_step."""
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
    image, mask = transforms.train_augment(image, mask, key, data_cfg)
    return {"image": image, "label": mask}

  ds = ds.map(example, num_parallel_calls=data_cfg.num_parallel_calls or tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2).with_options(_options())
  return iterate(ds, loader)


def num_eval_batches(n: int, batch_per_host: int, process_count: int) -> int:
  return math.ceil(math.ceil(n / process_count) / batch_per_host)


def eval_batches(source: Source, data_cfg, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Dict[str, np.ndarray]]:
  """This host's eval batches {"image", "label", "valid", "index"}, padded to data.eval_size."""
  if global_batch % process_count:
    raise ValueError(f"eval batch {global_batch} is not divisible by {process_count} hosts")
  local = global_batch // process_count
  n = len(source)
  indices = list(range(process_index, n, process_count))
  total = num_eval_batches(n, local, process_count) * local
  indices += [-1] * (total - len(indices))
  size = list(data_cfg.eval_size)

  def fits_canvas(index, image, mask):
    del mask
    if image.shape[0] > size[0] or image.shape[1] > size[1]:
      raise DataError(f"example {source.name(index)} is {image.shape[1]}x{image.shape[0]} "
                      f"(WxH), larger than data.eval_size={tuple(size)} (H, W); raise it")

  loader = _Loader(source, check=fits_canvas)

  def example(index):
    valid = index >= 0

    def real():
      image, mask = loader.tf_load(index)
      image = transforms.normalize(tf.cast(image, tf.float32), data_cfg.mean, data_cfg.std)
      return transforms.pad_to(image, mask, size)

    def pad():
      return (tf.zeros(size + [3], tf.float32),
              tf.fill(size, tf.constant(IGNORE_INDEX, tf.uint8)))

    image, mask = tf.cond(valid, real, pad)
    return {"image": tf.ensure_shape(image, size + [3]), "label": tf.ensure_shape(mask, size),
            "valid": valid, "index": index}

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(indices, tf.int64))
  ds = ds.map(example, num_parallel_calls=data_cfg.num_parallel_calls or tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(2).with_options(_options())
  return iterate(ds, loader)
