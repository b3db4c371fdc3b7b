"""Procedural volumes of textured 3-D shapes, single-channel like CT or MRI: V-Net's data
without the files.

Each example is a pure function of (seed, split, index): a float32 (D, H, W, 1) volume in
0..255 and its uint8 (D, H, W) label volume. Shapes of three classes (spheres, boxes turned
about the depth axis, tori about a random axis), later ones on top, lie in a background
with an intensity gradient, smooth low-frequency texture, background clutter (thin rods:
cylinders of object brightness that are not labelled) and Gaussian noise. Object brightness
is random and overlaps between classes, and each class has its own texture (radial shading,
stripes, plain), so a model separates them by shape and texture, not by a grey-value
lookup. The 2-D sibling is synthetic.py.
"""
from typing import Dict, List, Tuple

import numpy as np

from segjax.data import base
from segjax.data.registry import DATASETS

CLASS_NAMES = ("background", "sphere", "box", "torus")
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)], np.uint8)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_VOLUME_SIZE = (32, 64, 64)  # (D, H, W)


def _rotated_about_depth(dz, dy, dx, angle):
  """Coordinates in the frame of an object turned by `angle` about the depth (z) axis."""
  c, s = np.cos(angle), np.sin(angle)
  return dz, c * dy + s * dx, -s * dy + c * dx


def inside(obj: Dict, zz, yy, xx) -> np.ndarray:
  """Boolean (D, H, W) mask of the voxel centres inside `obj` (one of `render`'s objects)."""
  dz, dy, dx = zz - obj["center"][0], yy - obj["center"][1], xx - obj["center"][2]
  if obj["kind"] == 1:  # sphere: |p - c| <= r
    return dz ** 2 + dy ** 2 + dx ** 2 <= obj["radius"] ** 2
  if obj["kind"] == 2:  # box: |u_i| <= half_i in its own frame
    u = _rotated_about_depth(dz, dy, dx, obj["angle"])
    return np.all([np.abs(ui) <= h for ui, h in zip(u, obj["half_sizes"])], axis=0)
  # torus: (distance from the axis - R)^2 + height^2 <= a^2
  n = obj["axis"]
  height = dz * n[0] + dy * n[1] + dx * n[2]
  rho = np.sqrt(np.maximum(dz ** 2 + dy ** 2 + dx ** 2 - height ** 2, 0.0))
  return (rho - obj["major"]) ** 2 + height ** 2 <= obj["minor"] ** 2


def _texture(obj: Dict, zz, yy, xx, rng) -> np.ndarray:
  """Brightness modulation in [0.7, 1] that identifies a class."""
  dz, dy, dx = zz - obj["center"][0], yy - obj["center"][1], xx - obj["center"][2]
  if obj["kind"] == 1:  # sphere: brighter core, darker rim
    d2 = (dz ** 2 + dy ** 2 + dx ** 2) / obj["radius"] ** 2
    return 1.0 - 0.3 * np.clip(d2, 0.0, 1.0)
  if obj["kind"] == 2:  # box: stripes across one of its own axes
    u = _rotated_about_depth(dz, dy, dx, obj["angle"])[int(rng.integers(0, 3))]
    return np.where((u % 4.0) < 2.0, 0.7, 1.0)
  return np.ones_like(zz)  # torus: plain, recognised by its shape


def _draw_object(kind: int, shape, rng) -> Dict:
  scale = min(shape)
  r = rng.uniform(0.25, 0.42) * scale
  center = tuple(rng.uniform(r * 0.6, s - r * 0.6) for s in shape)
  obj = {"kind": kind, "center": center, "brightness": rng.uniform(110.0, 230.0)}
  if kind == 1:
    obj["radius"] = r
  elif kind == 2:
    obj["half_sizes"] = tuple(rng.uniform(0.55, 0.95, 3) * r)
    obj["angle"] = rng.uniform(0, np.pi)
  else:
    axis = rng.normal(size=3)
    obj.update(axis=tuple(axis / np.linalg.norm(axis)), major=0.75 * r,
               minor=rng.uniform(0.28, 0.4) * r)
  return obj


def render(rng: np.random.Generator, shape) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
  """(volume float32 (D, H, W, 1) in 0..255, mask uint8 (D, H, W), objects drawn in order)."""
  d, h, w = (int(s) for s in shape)
  zz, yy, xx = np.mgrid[0:d, 0:h, 0:w].astype(np.float32)
  # Background: a tilted intensity ramp and a few smooth waves.
  grad = rng.normal(size=3)
  ramp = (zz / d - 0.5) * grad[0] + (yy / h - 0.5) * grad[1] + (xx / w - 0.5) * grad[2]
  volume = rng.uniform(30.0, 90.0) + 15.0 * ramp
  for _ in range(3):
    k = rng.normal(size=3) * 0.25
    volume = volume + rng.uniform(3.0, 10.0) * np.cos(k[0] * zz + k[1] * yy + k[2] * xx +
                                                      rng.uniform(0, 2 * np.pi))
  # Clutter: thin rods (cylinders of radius 1-1.8 voxels) as bright as objects, unlabelled.
  for _ in range(rng.integers(1, 4)):
    p = rng.uniform(0, 1, 3) * (d, h, w)
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    rel = np.stack([zz - p[0], yy - p[1], xx - p[2]], -1)
    dist2 = np.sum(rel ** 2, -1) - (rel @ u) ** 2
    volume = np.where(dist2 <= rng.uniform(1.0, 1.8) ** 2, rng.uniform(110.0, 230.0), volume)
  mask = np.zeros((d, h, w), np.uint8)
  objects = []
  for _ in range(rng.integers(3, 6)):  # later objects on top
    obj = _draw_object(int(rng.integers(1, len(CLASS_NAMES))), (d, h, w), rng)
    region = inside(obj, zz, yy, xx)
    tex = _texture(obj, zz, yy, xx, rng)
    volume = np.where(region, obj["brightness"] * tex, volume)
    mask[region] = obj["kind"]
    objects.append(obj)
  volume = volume + rng.normal(0.0, 8.0, volume.shape)
  return np.clip(volume, 0, 255).astype(np.float32)[..., None], mask, objects


class SyntheticVolumes(base.Source):
  """`size` volumes of `volume_size` (D, H, W) of one split."""
  class_names = CLASS_NAMES
  palette = PALETTE
  spatial_dims = 3
  channels = 1
  image_dtype = np.float32

  def __init__(self, split: str, size: int, volume_size=DEFAULT_VOLUME_SIZE, seed: int = 0):
    if split not in _SPLIT_IDS:
      raise ValueError(f"synthetic_volumes split must be one of {sorted(_SPLIT_IDS)}, "
                       f"got {split!r}")
    self.split_id = _SPLIT_IDS[split]
    self.length = int(size)
    self.volume_size = tuple(int(s) for s in volume_size)
    self.seed = int(seed)

  def __len__(self):
    return self.length

  def size(self, index):
    return self.volume_size

  def example(self, index: int):
    """(volume, mask, objects): `load` plus the shapes drawn, for checks against geometry."""
    return render(np.random.default_rng([self.seed, self.split_id, int(index)]),
                  self.volume_size)

  def load(self, index):
    volume, mask, _ = self.example(index)
    return volume, mask


def _open(data_cfg, split):
  size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_eval_size
  return SyntheticVolumes(split, size, data_cfg.get("synthetic_volume_size", DEFAULT_VOLUME_SIZE),
                          data_cfg.synthetic_seed)


DATASETS.register("synthetic_volumes", base.DatasetSpec(open=_open, class_names=CLASS_NAMES,
                                                        palette=PALETTE))
