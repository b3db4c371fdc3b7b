"""Procedural dataset of textured shapes on cluttered backgrounds.

Needs no files, so the quickstart and the tests run anywhere. Each example is a pure function
of (seed, split, index). Classes differ in shape *and* texture while colours are random, so a
model must look at structure, not at a colour lookup; clutter (lines and blobs in random
colours) and noise keep the background from being trivially separable.
"""
import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS

CLASS_NAMES = ("background", "disc", "square", "triangle", "ring")
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200)],
                   np.uint8)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class Synthetic(base.Source):
  class_names = CLASS_NAMES
  palette = PALETTE
  dataset = "synthetic"
  render = staticmethod(lambda rng, image_size: render(rng, image_size))  # (image, mask)

  def __init__(self, split: str, size: int, image_size=(128, 128), seed: int = 0):
    if split not in _SPLIT_IDS:
      raise ValueError(f"{self.dataset} split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    self.split_id = _SPLIT_IDS[split]
    self.length = int(size)
    self.image_size = tuple(int(s) for s in image_size)
    self.seed = int(seed)

  def __len__(self):
    return self.length

  def size(self, index):
    return self.image_size

  def load(self, index):
    return self.render(np.random.default_rng([self.seed, self.split_id, int(index)]),
                       self.image_size)


def _texture(kind: int, yy, xx, rng) -> np.ndarray:
  """Brightness modulation in [0.45, 1] that identifies a class."""
  period = rng.uniform(5.0, 8.0)
  if kind == 1:  # dots
    return np.where(((yy % period) - period / 2) ** 2 + ((xx % period) - period / 2) ** 2
                    < (period / 3.5) ** 2, 0.45, 1.0)
  if kind == 2:  # checker
    return np.where((np.floor(yy / period) + np.floor(xx / period)) % 2 == 0, 0.5, 1.0)
  if kind == 3:  # diagonal stripes
    return np.where(((yy + xx) % period) < period / 2, 0.5, 1.0)
  return np.ones_like(yy)  # ring: plain, recognised by its shape


def _shape_mask(kind: int, yy, xx, cy, cx, r, angle) -> np.ndarray:
  dy, dx = yy - cy, xx - cx
  if kind == 1:
    return dy ** 2 + dx ** 2 <= r ** 2
  if kind == 2:
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.8)
  if kind == 3:
    inside = np.ones_like(yy, bool)
    for k in range(3):
      a = angle + 2 * np.pi * k / 3
      inside &= (np.cos(a) * dx + np.sin(a) * dy) <= r * 0.6
    return inside
  d2 = dy ** 2 + dx ** 2
  return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)


def render(rng: np.random.Generator, image_size):
  """One (image uint8 HxWx3, mask uint8 HxW) example drawn from rng."""
  h, w = image_size
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  # Background: a random gradient between two colours, then clutter.
  c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  t = ((yy / h) * rng.uniform(-1, 1) + (xx / w) * rng.uniform(-1, 1) + 1) / 2
  image = c0 * (1 - t[..., None]) + c1 * t[..., None]
  scale = min(h, w)
  for _ in range(rng.integers(3, 8)):  # lines
    y0, x0, y1, x1 = rng.uniform(0, 1, 4) * [h, w, h, w]
    length = np.hypot(y1 - y0, x1 - x0) + 1e-6
    dist = np.abs((x1 - x0) * (y0 - yy) - (x0 - xx) * (y1 - y0)) / length
    image[dist < rng.uniform(0.7, 2.0)] = rng.uniform(0, 255, 3)
  for _ in range(rng.integers(2, 6)):  # soft blobs
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.03, 0.12) * scale
    image[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
  mask = np.zeros((h, w), np.uint8)
  for _ in range(rng.integers(2, 6)):  # objects, later ones on top
    kind = int(rng.integers(1, len(CLASS_NAMES)))
    r = rng.uniform(0.08, 0.22) * scale
    cy, cx = rng.uniform(r * 0.5, h - r * 0.5), rng.uniform(r * 0.5, w - r * 0.5)
    inside = _shape_mask(kind, yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi))
    color = rng.uniform(60, 255, 3)
    tex = _texture(kind, yy - cy, xx - cx, rng)
    image[inside] = color * tex[inside][:, None]
    mask[inside] = kind
  image += rng.normal(0, 6.0, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8), mask


def _open(data_cfg, split):
  size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_eval_size
  return Synthetic(split, size, data_cfg.synthetic_image_size, data_cfg.synthetic_seed)


DATASETS.register("synthetic", base.DatasetSpec(open=_open, class_names=CLASS_NAMES,
                                                palette=PALETTE))
