"""Synchronised volume + mask augmentation as TensorFlow ops: transforms.py's rules in 3-D.

Volumes are float32 (D, H, W, C) (CT, MRI: C = 1), masks uint8 (D, H, W) class ids with
255 = ignore. As in transforms.py every op takes a stateless-random `seed` of shape [2], draws
each random parameter exactly once and applies it to volume and mask alike, so the pair stays
aligned and the result is a pure function of (inputs, seed); masks are never interpolated and
are padded with 255. V-Net's own augmentation (random B-spline deformations and histogram
matching) is not reproduced; random crops and flips along every axis are the usual cheap
stand-in for volumes.

All ops work eagerly and inside tf.data graphs; tests/test_vnet.py runs both.
"""
from typing import Sequence

import tensorflow as tf

from segjax.data.base import IGNORE_INDEX
from segjax.data.transforms import normalize, split_seed


def random_crop(volume, mask, seed, crop_size: Sequence[int]):
  """A (d, h, w) window at one random offset of both (the whole side where the volume is
  smaller; `pad_to` fills up to the crop size afterwards)."""
  dhw = tf.shape(mask)[:3]
  crop = tf.minimum(dhw, tf.constant(list(crop_size), tf.int32))
  room = dhw - crop + 1
  offset = tf.cast(tf.floor(tf.random.stateless_uniform([3], seed) * tf.cast(room, tf.float32)),
                   tf.int32)
  offset = tf.minimum(offset, room - 1)  # uniform() < 1, but keep float rounding in range
  channels = tf.shape(volume)[3:]
  volume = tf.slice(volume, tf.concat([offset, tf.zeros_like(channels)], 0),
                    tf.concat([crop, channels], 0))
  return volume, tf.slice(mask, offset, crop)


def random_flip(volume, mask, seed, prob: float = 0.5, axes: Sequence[int] = (0, 1, 2)):
  """Flips both along each of `axes` (0 = depth, 1 = height, 2 = width) with probability prob,
  one coin per axis drawn once for the pair."""
  coins = tf.random.stateless_uniform([3], seed) < prob
  for axis in axes:
    if axis not in (0, 1, 2):
      raise ValueError(f"flip axes of a (D, H, W) volume are 0, 1, 2, got {axis}")
    flip = coins[axis]
    volume = tf.cond(flip, lambda v=volume, a=axis: tf.reverse(v, [a]), lambda v=volume: v)
    mask = tf.cond(flip, lambda m=mask, a=axis: tf.reverse(m, [a]), lambda m=mask: m)
  return volume, mask


def pad_to(volume, mask, size: Sequence[int]):
  """Pads the far end of each axis to `size` (d, h, w): the volume with 0, the mask with 255."""
  pad = tf.maximum(tf.constant(list(size), tf.int32) - tf.shape(mask)[:3], 0)
  zeros = tf.zeros([3], tf.int32)
  paddings = tf.stack([zeros, pad], axis=1)
  volume = tf.pad(volume, tf.concat([paddings, [[0, 0]]], 0))
  mask = tf.pad(mask, paddings, constant_values=IGNORE_INDEX)
  return volume, mask


def train_augment(volume, mask, seed, cfg):
  """The training chain of one volume; cfg is config.data (crop_size (d, h, w), flip_prob,
  flip_axes (default all three), mean and std with one value per channel)."""
  s = split_seed(seed, 2)
  volume = tf.cast(volume, tf.float32)
  volume, mask = random_crop(volume, mask, s[0], cfg.crop_size)
  volume, mask = random_flip(volume, mask, s[1], cfg.flip_prob,
                             tuple(cfg.get("flip_axes", (0, 1, 2))))
  volume = normalize(volume, cfg.mean, cfg.std)
  volume, mask = pad_to(volume, mask, cfg.crop_size)
  crop = [int(x) for x in cfg.crop_size]
  return (tf.ensure_shape(volume, crop + [len(cfg.mean)]), tf.ensure_shape(mask, crop))
