"""Synchronised image + mask augmentation as TensorFlow ops (mmseg semantics).

Every op takes `seed`, a stateless-random seed of shape [2], draws each random parameter
exactly once from it and applies that parameter to image and mask alike, so the pair stays
aligned and the result is a pure function of (inputs, seed). Images are float32 HxWx3 in
[0, 255] until `normalize`; masks are uint8 HxW class ids with 255 = ignore. Masks are only
ever resized with nearest neighbour and padded with 255.

All ops work eagerly and inside tf.data graphs; tests run both.
"""
from typing import Sequence, Tuple

import tensorflow as tf

from segjax.data.base import IGNORE_INDEX

CROP_TRIES = 10  # mmseg RandomCrop: up to 10 re-draws to satisfy cat_max_ratio


def split_seed(seed, n: int):
  """n independent [2]-seeds derived from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def random_resize(image, mask, seed, scale: Sequence[int], ratio_range: Tuple[float, float]):
  """Rescales to a random multiple of `scale` (h, w), keeping the aspect ratio.

  mmseg RandomResize(scale, ratio_range, keep_ratio=True): the target (h*r, w*r) is a box the
  image is fitted into (long side to the long side, short side to the short side).
  """
  ratio = tf.random.stateless_uniform([], seed, ratio_range[0], ratio_range[1])
  long_target = float(max(scale)) * ratio
  short_target = float(min(scale)) * ratio
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = tf.minimum(long_target / tf.reduce_max(hw), short_target / tf.reduce_min(hw))
  size = tf.cast(tf.floor(hw * factor + 0.5), tf.int32)
  return resize(image, mask, size)


def keep_ratio_size(hw: Sequence[int], scale: Sequence[int]) -> Tuple[int, int]:
  """The (h, w) that mmseg's Resize(scale, keep_ratio=True) gives an image of size `hw`: the
  largest size with its aspect ratio that fits the box `scale` (long side within the long
  side, short within the short), rounded like mmcv's rescale_size. Empty `scale`: unchanged."""
  h, w = int(hw[0]), int(hw[1])
  if not scale:
    return h, w
  factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_image(image, size: Sequence[int]):
  """uint8 or float image(s) (..., H, W, 3) -> float32 at `size` (h, w), bilinear (half-pixel
  centres, no antialiasing: OpenCV's INTER_LINEAR, which mmseg's test Resize uses, up to its
  fixed-point rounding). Unchanged (only cast) when already that size. The same op runs in
  the eval pipeline (graph) and for Segmenter/predict (eager): their inputs are identical."""
  image = tf.cast(image, tf.float32)
  if isinstance(size, (tuple, list)) and tuple(image.shape[-3:-1]) == tuple(size):
    return image  # eager shortcut; in a graph, resizing to the same size is the identity
  return tf.image.resize(image, size, method="bilinear")


def resize(image, mask, size):
  """Bilinear image, nearest-neighbour mask, to `size` (h, w)."""
  image = tf.image.resize(image, size, method="bilinear")
  mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
  return image, tf.cast(mask, tf.uint8)


def _crop_offset(seed, hw, crop_hw):
  margin = tf.maximum(hw - crop_hw, 0)
  oy = tf.random.stateless_uniform([], seed, 0, margin[0] + 1, dtype=tf.int32)
  ox = tf.random.stateless_uniform([], tf.reverse(seed, [0]), 0, margin[1] + 1, dtype=tf.int32)
  return tf.stack([oy, ox])


def random_crop(image, mask, seed, crop_size: Sequence[int], cat_max_ratio: float = 1.0):
  """Crops at most crop_size (h, w) at a random offset (smaller images stay whole).

  With cat_max_ratio < 1, re-draws the offset up to 10 times until no single class covers
  more than that fraction of the labelled pixels and at least two classes are present
  (mmseg RandomCrop); if none qualifies, the 11th draw is used.
  """
  hw = tf.shape(mask)[:2]
  crop_hw = tf.minimum(hw, tf.constant(list(crop_size), tf.int32))
  seeds = split_seed(seed, CROP_TRIES + 1)
  offsets = [_crop_offset(s, hw, crop_hw) for s in seeds]

  def crop(x, off):
    return tf.slice(x, tf.concat([off, tf.zeros([tf.rank(x) - 2], tf.int32)], 0),
                    tf.concat([crop_hw, tf.shape(x)[2:]], 0))

  if cat_max_ratio < 1.0:
    ok = []
    for off in offsets[:CROP_TRIES]:
      labels = tf.reshape(crop(mask, off), [-1])
      labels = tf.boolean_mask(labels, labels != IGNORE_INDEX)
      counts = tf.math.bincount(tf.cast(labels, tf.int32), minlength=256, maxlength=256)
      total = tf.maximum(tf.reduce_sum(counts), 1)
      ok.append(tf.logical_and(tf.math.count_nonzero(counts) > 1,
                               tf.reduce_max(counts) / total < cat_max_ratio))
    ok = tf.stack(ok + [tf.constant(True)])  # the last draw is the fallback
    chosen = tf.gather(tf.stack(offsets), tf.argmax(tf.cast(ok, tf.int32)))
  else:
    chosen = offsets[0]
  return crop(image, chosen), crop(mask, chosen)


def random_flip(image, mask, seed, prob: float = 0.5):
  """Horizontal flip of both with probability prob."""
  flip = tf.random.stateless_uniform([], seed) < prob
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
  return image, mask


def photometric_distortion(image, seed, brightness_delta: float = 32.0,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                           hue_delta: float = 18.0):
  """mmseg PhotoMetricDistortion on a float [0, 255] RGB image; each step has prob 0.5.

  Order: brightness, contrast (first or last, by coin), saturation, hue. Contrast scales pixel
  values (mmseg semantics, not around the mean); hue_delta is in OpenCV's 0..180 hue units.
  """
  s = split_seed(seed, 9)
  coin = lambda k: tf.random.stateless_uniform([], s[k]) < 0.5  # noqa: E731
  clip = lambda x: tf.clip_by_value(x, 0.0, 255.0)  # noqa: E731

  delta = tf.random.stateless_uniform([], s[0], -brightness_delta, brightness_delta)
  image = tf.where(coin(1), clip(image + delta), image)
  alpha = tf.random.stateless_uniform([], s[2], *contrast_range)
  contrast_first = coin(3)
  do_contrast = coin(4)
  image = tf.where(contrast_first & do_contrast, clip(image * alpha), image)

  hsv = tf.image.rgb_to_hsv(image / 255.0)
  sat = tf.random.stateless_uniform([], s[5], *saturation_range)
  hsv = tf.where(coin(6), tf.stack([hsv[..., 0], tf.clip_by_value(hsv[..., 1] * sat, 0, 1),
                                    hsv[..., 2]], -1), hsv)
  hue = tf.cast(tf.random.stateless_uniform([], s[7], -int(hue_delta), int(hue_delta) + 1,
                                            dtype=tf.int32), tf.float32) / 180.0
  hsv = tf.where(coin(8), tf.stack([tf.math.floormod(hsv[..., 0] + hue, 1.0), hsv[..., 1],
                                    hsv[..., 2]], -1), hsv)
  image = tf.image.hsv_to_rgb(hsv) * 255.0

  image = tf.where(tf.logical_not(contrast_first) & do_contrast, clip(image * alpha), image)
  return image


def normalize(image, mean: Sequence[float], std: Sequence[float]):
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def pad_to(image, mask, size: Sequence[int]):
  """Pads bottom/right to `size` (h, w): image with 0, mask with 255 (ignored)."""
  hw = tf.shape(mask)[:2]
  pad = tf.maximum(tf.constant(list(size), tf.int32) - hw, 0)
  image = tf.pad(image, [[0, pad[0]], [0, pad[1]], [0, 0]])
  mask = tf.pad(mask, [[0, pad[0]], [0, pad[1]]], constant_values=IGNORE_INDEX)
  return image, mask


def train_augment(image, mask, seed, cfg):
  """The full training chain for one example; cfg is config.data."""
  s = split_seed(seed, 4)
  image = tf.cast(image, tf.float32)
  if cfg.ratio_range[1] > 0:
    image, mask = random_resize(image, mask, s[0], cfg.base_size, tuple(cfg.ratio_range))
  image, mask = random_crop(image, mask, s[1], cfg.crop_size, cfg.cat_max_ratio)
  image, mask = random_flip(image, mask, s[2], cfg.flip_prob)
  if cfg.photometric:
    image = photometric_distortion(image, s[3])
  image = normalize(image, cfg.mean, cfg.std)
  image, mask = pad_to(image, mask, cfg.crop_size)
  crop = list(cfg.crop_size)
  return tf.ensure_shape(image, crop + [3]), tf.ensure_shape(mask, crop)
