"""The Source interface: an indexable dataset of (image, mask) numpy pairs.

Sources do I/O and label mapping only; augmentation lives in transforms.py and batching in
pipeline.py. `load` runs inside tf.data (via tf.numpy_function), so it must be thread-safe,
and it raises DataError naming the file for anything wrong with it.
"""
import dataclasses
import glob
import io
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segjax.errors import DataError

IGNORE_INDEX = 255  # the label value that no loss or metric counts; defined only here


class Source:
  """Base class. Subclasses set `class_names`, `palette` and implement __len__/load/name."""
  class_names: Sequence[str] = ()
  palette: np.ndarray = None  # (num_classes, 3) uint8
  # What `load` returns: images (H, W, 3) uint8; a volume source (CT, MRI: D, H, W, 1 float32)
  # sets 3, 1, np.float32, and then `size` gives (D, H, W) (segjax/data/synthetic_volumes.py).
  spatial_dims: int = 2
  channels: int = 3
  image_dtype = np.uint8

  def __len__(self) -> int:
    raise NotImplementedError

  def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns image (H, W, 3) uint8 and mask (H, W) uint8 of class ids, 255 = ignore."""
    raise NotImplementedError

  def name(self, index: int) -> str:
    """A short stable identifier of example `index` (file stem), used for outputs."""
    return f"{index:06d}"

  def size(self, index: int) -> Tuple[int, int]:
    """(height, width) of example `index`. Evaluation plans its shape buckets from these
    before reading any pixel, so sources override this with something cheaper than load."""
    return tuple(self.load(index)[0].shape[:2])


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A registered dataset: `open(data_cfg, split) -> Source` reads it from its files;
  class_names/palette are known without reading anything (None: from data.class_names /
  the default palette, for datasets such as `folder` whose classes the config names).
  `splits` are the splits it offers: those `segjax.tools.prepare_data` writes by default."""
  open: Callable[..., "Source"]
  class_names: Optional[Sequence[str]] = None
  palette: Optional[np.ndarray] = None
  splits: Sequence[str] = ("train", "val")


def _open(path: str, what: str) -> Image.Image:
  """Decoded PIL image; DataError naming the file if it is missing or corrupt."""
  try:
    with open(path, "rb") as f:
      img = Image.open(io.BytesIO(f.read()))
      img.load()
  except FileNotFoundError:
    raise DataError(f"{path}: {what} file not found") from None
  except Exception as e:  # PIL raises many types for truncated or foreign files.
    raise DataError(f"{path}: cannot decode {what} ({type(e).__name__}: {e})") from None
  return img


def read_image(path: str) -> np.ndarray:
  """RGB uint8 (H, W, 3)."""
  return np.asarray(_open(path, "image").convert("RGB"), dtype=np.uint8)


def image_size(path: str) -> Tuple[int, int]:
  """(height, width) from the file header, without decoding the pixels."""
  try:
    with Image.open(path) as img:
      return img.height, img.width
  except FileNotFoundError:
    raise DataError(f"{path}: image file not found") from None
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{path}: cannot read the image header ({type(e).__name__}: {e})") from None


def read_mask(path: str) -> np.ndarray:
  """Single-channel uint8 label map (H, W); palette PNGs give their indices."""
  img = _open(path, "mask")
  if img.mode not in ("L", "P", "I", "I;16"):
    raise DataError(f"{path}: mask must be a single-channel label PNG, got mode {img.mode}")
  mask = np.asarray(img)
  if mask.max(initial=0) > 255 or mask.min(initial=0) < 0:
    raise DataError(f"{path}: mask values must lie in 0..255, found {mask.min()}..{mask.max()}")
  return mask.astype(np.uint8)


def check_pair(image: np.ndarray, mask: np.ndarray, num_classes: int,
               image_path: str, mask_path: str) -> None:
  """Refuses a mask whose size differs from its image or whose labels exceed the classes."""
  if image.shape[:2] != mask.shape[:2]:
    raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                    f"{image_path} is {image.shape[1]}x{image.shape[0]}")
  bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
  if bad.any():
    values = sorted(np.unique(mask[bad]).tolist())
    raise DataError(f"{mask_path}: label value(s) {values[:5]} outside 0..{num_classes - 1} "
                    f"(and {IGNORE_INDEX} = ignore); check data.num_classes or the label mapping")


def default_palette(num_classes: int) -> np.ndarray:
  """The PASCAL VOC bit-interleaved palette, distinct colours for any number of classes."""
  palette = np.zeros((num_classes, 3), np.uint8)
  for c in range(num_classes):
    v, r, g, b = c, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((v >> 0) & 1) << shift
      g |= ((v >> 1) & 1) << shift
      b |= ((v >> 2) & 1) << shift
      v >>= 3
    palette[c] = (r, g, b)
  return palette


def sorted_files(root: str, suffix: str) -> List[str]:
  return sorted(glob.glob(os.path.join(root, "**", f"*{suffix}"), recursive=True))


class PairedFiles(Source):
  """Images and label maps paired one to one by list position (most datasets' layout).

  `lut` maps raw label values to class ids, 255 = ignore (None: the values are the class
  ids). Subclasses list the files (e.g. with `pair_by_stem`), set class_names and palette,
  and override `read_label` for label files that are not label PNGs (.mat).
  """

  def __init__(self, images: Sequence[str], masks: Sequence[str],
               lut: Optional[np.ndarray] = None):
    self.images, self.masks, self._lut = list(images), list(masks), lut

  def __len__(self):
    return len(self.images)

  def name(self, index):
    return os.path.splitext(os.path.basename(self.images[index]))[0]

  def size(self, index):
    return image_size(self.images[index])

  def read_label(self, path: str) -> np.ndarray:
    """The raw label map in `path` (before `lut`)."""
    return read_mask(path)

  def load(self, index):
    image = read_image(self.images[index])
    mask = self.read_label(self.masks[index])
    if self._lut is not None:
      mask = self._lut[mask]
    check_pair(image, mask, len(self.class_names), self.images[index], self.masks[index])
    return image, mask


def read_split_list(dataset: str, path: str, layout: str) -> List[str]:
  """The image ids of a VOC-style split list (one id first on each line); a missing list is
  a DataError naming it and the expected layout."""
  try:
    with open(path) as f:
      return [line.split()[0] for line in f if line.strip()]
  except FileNotFoundError:
    raise DataError(f"{dataset}: {path} not found. Expected {layout}; point to it with "
                    "--config.data.root=...") from None


def pair_by_stem(dataset: str, image_dir: str, mask_dir: str, layout: str,
                 image_suffix: str = ".jpg", mask_suffix: str = ".png",
                 what: str = "label map") -> Tuple[List[str], List[str]]:
  """(images, masks): every `*image_suffix` in image_dir (sorted) with the file of the same
  stem in mask_dir. A missing directory, an empty one or a missing label map is a DataError
  naming the path and the expected `layout`."""
  for d in (image_dir, mask_dir):
    if not os.path.isdir(d):
      raise DataError(f"{dataset} not found: {d} does not exist. Expected {layout}; point to it "
                      "with --config.data.root=...")
  stems = sorted(f[:-len(image_suffix)] for f in os.listdir(image_dir)
                 if f.endswith(image_suffix))
  if not stems:
    raise DataError(f"{dataset}: no *{image_suffix} in {image_dir}; expected {layout}")
  present = set(os.listdir(mask_dir))
  for stem in stems:
    if stem + mask_suffix not in present:
      raise DataError(f"{dataset}: {os.path.join(mask_dir, stem + mask_suffix)} missing (the "
                      f"{what} of {os.path.join(image_dir, stem + image_suffix)})")
  return ([os.path.join(image_dir, s + image_suffix) for s in stems],
          [os.path.join(mask_dir, s + mask_suffix) for s in stems])
