"""Datasets as TFDS ArrayRecord files: a prepared copy of any registered dataset, or one of
the datasets TFDS itself ships with masks.

Why a prepared copy: a dataset of 20k loose JPEG/PNG pairs is 40k opens per epoch, slow on
network disks and on gs:// (a TPU pod's usual home); its ArrayRecord copy is a few large
files with O(1) random access, which is all the training pipeline needs (its order is a
pure function of (seed, step), so it reads example indices, not a stream).

  python -m segjax.tools.prepare_data --dataset=ade20k --manual_dir=data/ade \
      --data_dir=data/tfds
  python -m segjax.main ... --config.data.name=ade20k --config.data.tfds_dir=data/tfds

`prepare` reads the dataset through its own file Source (the reader `data.root` uses, with
`data.root` = the manual dir) and writes {data_dir}/segjax_{name}/1.0.0/: one ArrayRecord
file set per split, examples in the file reader's order (TFDS's shuffling is off), so index
i of the copy is index i of the files and a run trains on the same batches from either.
Images are stored as PNG of the decoded pixels (lossless, also for JPEG sources) and masks
as PNG after the dataset's label mapping, so a read equals the file reader's bit for bit.
metadata.json holds each split's (height, width) and names: `size(i)`, which evaluation
calls for every image before reading one, is a list lookup instead of a record read.

`data.name = "tfds:NAME[/CONFIG]"` reads a dataset TFDS prepared in `data.tfds_dir` (with
`--file_format=array_record`): image and label features are found by name (see
`IMAGE_KEYS`, `LABEL_KEYS`; `data.tfds_image_key`/`tfds_label_key` override), the label
mapping is `data.tfds_label_map`, class names come from `data.class_names`.

Nothing here downloads: preparation reads only the manual dir (a missing one is the file
reader's DataError), and GCS lookups are off. tensorflow_datasets is imported inside the
functions, because `import segjax.data` must stay cheap.
"""
import concurrent.futures
import functools
import io
import os
import tempfile
import threading
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from segjax.data import TFDS_PREFIX, base, cityscapes
from segjax.data.registry import DATASETS
from segjax.errors import ConfigError, DataError

VERSION = "1.0.0"  # of every prepared copy; bump when the stored format changes

# Feature names tried, in order, when data.tfds_image_key / tfds_label_key are empty:
# scene_parse150 has image/annotation, cityscapes/* image_left/segmentation_label,
# oxford_iiit_pet and caltech_birds image/segmentation_mask.
IMAGE_KEYS = ("image", "image_left")
LABEL_KEYS = ("segmentation_label", "annotation", "segmentation_mask", "label")
NAME_KEYS = ("image_id", "file_name", "name", "id")  # Text features naming an example


def _reduce_zero_label() -> np.ndarray:
  """mmseg's reduce_zero_label: 0 (unlabelled) becomes ignore, every other id shifts down."""
  lut = np.arange(256, dtype=np.int32) - 1
  lut[0] = base.IGNORE_INDEX
  lut[base.IGNORE_INDEX] = base.IGNORE_INDEX
  return lut.astype(np.uint8)


# data.tfds_label_map -> a 256-entry lookup table applied to the stored label (None: as is).
LABEL_MAPS: Dict[str, Callable[[], Optional[np.ndarray]]] = {
    "": lambda: None,
    "reduce_zero_label": _reduce_zero_label,  # ADE20K-style 0 = "other"
    "cityscapes_label_ids": cityscapes.label_lut,  # TFDS cityscapes stores labelIds
}


# ----------------------------------------------------------------------------- the builder
def builder_name(name: str) -> str:
  """TFDS name of the prepared copy of registered dataset `name` ("segjax_ade20k")."""
  return "segjax_" + "".join(c if c.isalnum() else "_" for c in name.lower())


_BUILDERS: Dict[str, type] = {}
_BUILDERS_LOCK = threading.Lock()


def builder_class(name: str) -> type:
  """The TFDS builder class of registered dataset `name`, created once per process.

  TFDS registers a builder class under its `name` when the class is created and refuses a
  second class of that name, so classes are cached here; a class is made per dataset (not
  one class with a config per dataset) so the copy reads back with plain TFDS too:
  `tfds.data_sources("segjax_ade20k", data_dir=...)` once this function has run, or
  `tfds.builder_from_directory(<data_dir>/segjax_ade20k/1.0.0)` without segjax.
  """
  DATASETS.get(name)  # an unknown dataset is a ConfigError listing the known ones
  with _BUILDERS_LOCK:
    if name not in _BUILDERS:
      import types

      base_cls = _builder_base()
      cls_name = "Segjax" + "".join(p.capitalize() for p in builder_name(name).split("_")[1:])
      body = {"name": builder_name(name), "dataset": name, "__module__": __name__}
      try:
        cls = types.new_class(cls_name, (base_cls,), {}, lambda ns: ns.update(body))
      except ValueError:  # registered by an earlier copy of this module (importlib.reload)
        cls = types.new_class(cls_name, (base_cls,), {"skip_registration": True},
                              lambda ns: ns.update(body))
      _BUILDERS[name] = cls
    return _BUILDERS[name]


@functools.lru_cache(maxsize=None)
def _builder_base() -> type:
  """The GeneratorBasedBuilder every prepared copy shares (defined on first use: it needs
  tensorflow_datasets imported)."""
  import tensorflow_datasets as tfds

  class SegjaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the `Source` of each split given at construction; reads need none."""
    VERSION = tfds.core.Version(VERSION)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the dataset's official files, unpacked, in --manual_dir in the layout its "
        "segjax reader expects (segjax/data/<dataset>.py, the README's Datasets section); "
        "nothing is downloaded.")
    dataset = ""  # the registered name, set per subclass
    # TFDS looks for a checksums file beside the builder's code; there is nothing to check
    # (nothing is downloaded), and its lookup for a class defined in a package imports
    # importlib_resources, a dependency TFDS declares for Python < 3.9 only.
    code_path = None

    def __init__(self, *, sources: Optional[Dict[str, base.Source]] = None,
                 workers: int = 0, progress: bool = True, **kwargs):
      self._sources = sources or {}
      self._workers = workers or min(16, os.cpu_count() or 1)
      self._progress = progress
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description=f"The {self.dataset} dataset, prepared by segjax from its official files.",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
              "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
              "name": tfds.features.Text(),
              "height": tfds.features.Scalar(np.int32),
              "width": tfds.features.Scalar(np.int32),
          }),
          disable_shuffling=True,  # index i of the copy = index i of the file reader
          metadata=tfds.core.MetadataDict(),
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # never used: no downloads, and the sources are already open
      self.info.metadata["splits"] = {}  # filled by _generate_examples
      return {split: self._generate_examples(split) for split in self._sources}

    def _generate_examples(self, split):
      source = self._sources[split]
      index = {"sizes": [], "names": []}
      self.info.metadata["splits"][split] = index
      # Closed on an error too, so the error line is the last thing printed.
      with _progress_bar(len(source), f"{self.dataset} {split}", self._progress) as bar:
        for i, (name, image, label) in enumerate(_encoded(source, self._workers)):
          h, w = image[1]
          index["sizes"].append([h, w])
          index["names"].append(name)
          bar.update(1)
          yield i, {"image": image[0], "label": label, "name": name, "height": h, "width": w}

    # TFDS prints "Downloading and preparing dataset ... " and "... downloaded and
    # prepared" around a generation; nothing is downloaded, and prepare() reports itself.
    def _log_download_bytes(self):
      pass

    def _log_download_done(self):
      pass

  return SegjaxBuilder


def _png(array: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array).save(out, format="PNG")
  return out.getvalue()


def _encoded(source: base.Source, workers: int):
  """Yields (name, (image PNG, (h, w)), label PNG) of every example in order, loading and
  encoding up to 2*workers examples ahead in threads (PIL releases the GIL while it
  decodes and compresses, so this scales with cores; PNG encoding dominates)."""

  def one(i):
    image, mask = source.load(i)
    return source.name(i), (_png(image), image.shape[:2]), _png(mask)  # 1-channel PNG

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = []
    for i in range(len(source)):
      pending.append(pool.submit(one, i))
      if len(pending) > 2 * workers:
        yield pending.pop(0).result()
    for future in pending:
      yield future.result()


def _progress_bar(total: int, desc: str, enabled: bool):
  import tqdm
  return tqdm.tqdm(total=total, desc=desc, unit=" examples", disable=not enabled,
                   dynamic_ncols=True)


# ----------------------------------------------------------------------------- preparing
def prepare(name: str, manual_dir: str, data_dir: str, splits: Optional[Sequence[str]] = None,
            data_cfg=None, overwrite: bool = False, workers: int = 0,
            progress: bool = True) -> dict:
  """Writes the ArrayRecord copy of registered dataset `name` from its files in manual_dir.

  Args:
    name: a DATASETS entry (config.data.name).
    manual_dir: the dataset's official files, as `data.root` would point to them.
    data_dir: TFDS data dir written (later `data.tfds_dir`).
    splits: splits to write; default: the DatasetSpec's `splits`.
    data_cfg: config.data for readers that need more than the root (folder's class_names,
      synthetic's sizes); default: configs/common.py's base_config().data.
    overwrite: rebuild a copy that exists (the old one is replaced only once the new one
      is complete); without it an existing copy holding every requested split is reused,
      and one missing a split is a DataError.
    workers: threads loading and encoding examples (0: min(16, cores)).
    progress: a progress bar per split.

  Returns:
    {"path", "examples": {split: n}, "bytes", "seconds", "reused"}.

  Raises:
    DataError: the reader's own one-line error for a missing or incomplete manual dir,
      naming the file it expected; nothing is left in data_dir then.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.utils import tqdm_utils

  start = time.perf_counter()
  spec = DATASETS.get(name)
  splits = tuple(splits or spec.splits)
  for split in splits:
    if not split.replace("_", "").isalnum():
      raise ConfigError(f"split {split!r} cannot be prepared: a copy holds plain splits (letters, "
                        "digits, _); prepare the parts of a combination such as "
                        "train+train_extra and read it back by the same name")
  target = builder_class(name)(data_dir=data_dir)
  exists = _is_prepared(target)
  if exists and not overwrite:
    missing = sorted(set(splits) - set(target.info.splits))
    if missing:
      raise DataError(
          f"{target.data_dir} holds {name} without split(s) {', '.join(missing)} (it has "
          f"{', '.join(sorted(target.info.splits))}); prepare again with --overwrite and "
          f"--splits={','.join(sorted(set(splits) | set(target.info.splits)))}")
    return _summary(target, splits, start, reused=True)

  import ml_collections
  cfg = ml_collections.ConfigDict((data_cfg if data_cfg is not None
                                   else _default_data_cfg()).to_dict())
  cfg.name, cfg.root = name, os.fspath(manual_dir)
  # Every split is opened (its file list built and checked) before TFDS starts, so a
  # missing or incomplete download fails at once with the reader's message.
  sources = {split: spec.open(cfg, split) for split in splits}
  # An overwrite is written beside the old copy, which stays readable until the new one
  # is complete (TFDS's own overwrite deletes it first).
  staging = target.data_path.parent.parent / f".{builder_name(name)}.overwrite"
  if staging.exists():
    staging.rmtree()
  builder = builder_class(name)(data_dir=os.fspath(staging) if exists else data_dir,
                                file_format="array_record", sources=sources,
                                workers=workers, progress=progress)
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir),
                                        try_download_gcs=False)
  shown = getattr(tqdm_utils, "_active", True)
  tfds.display_progress_bar(False)  # its bars count examples without a total; ours do
  try:
    with tempfile.TemporaryDirectory() as downloads:  # TFDS makes one even when unused
      builder.download_and_prepare(download_dir=downloads, download_config=config)
  except BaseException:
    # TFDS removed its incomplete copy; remove what is left around it (nothing, or empty).
    if staging.exists():
      staging.rmtree()
    parent = target.data_path.parent
    if parent.exists() and not any(parent.iterdir()):
      parent.rmdir()
    raise
  finally:
    tfds.display_progress_bar(shown)
  if exists:
    target.data_path.rmtree()
    builder.data_path.rename(target.data_path)
    staging.rmtree()
  return _summary(builder_class(name)(data_dir=data_dir), splits, start, reused=False)


def _is_prepared(builder) -> bool:
  """builder.is_prepared(), minus the warning it logs for a directory that was never
  written (the usual case before a first preparation)."""
  return (builder.data_path / "dataset_info.json").exists() and builder.is_prepared()


def _default_data_cfg():
  """configs/common.py's data section: the defaults every config starts from."""
  import sys

  from segjax.tools.config_file import REPO
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  from configs import common
  return common.base_config().data


def _summary(builder, splits, start, reused: bool) -> dict:
  size = sum(f.stat().length for f in builder.data_path.iterdir() if f.is_file())
  examples = {s: builder.info.splits[s].num_examples for s in splits}
  return {"path": os.fspath(builder.data_dir), "examples": examples, "bytes": size,
          "seconds": time.perf_counter() - start, "reused": reused}


# ----------------------------------------------------------------------------- reading
class TfdsSource(base.Source):
  """A split of a TFDS ArrayRecord dataset with random access.

  Only the image and label features are decoded (by PIL, here, not by TFDS, so a greyscale
  JPEG still comes back RGB and a 3-channel label gives its first channel: scene_parse150
  stores the class id in R). Reads are thread-safe: ArrayRecord shares one thread-safe
  reader per file, and decoding keeps no state.
  """

  def __init__(self, records, *, image_key: str, label_key: str, class_names, palette,
               where: str, lut: Optional[np.ndarray] = None,
               sizes: Optional[Sequence[Tuple[int, int]]] = None,
               names: Optional[Sequence[str]] = None, name_key: Optional[str] = None):
    """records: a TFDS data source whose image and label features are SkipDecoding'ed;
    sizes/names: per-example index (prepared copies), else read from the records."""
    self.records = records
    self.image_key, self.label_key, self.name_key = image_key, label_key, name_key
    self.class_names = tuple(class_names)
    self.palette = palette
    self.where = where
    self.lut = lut
    self.sizes = sizes
    self.names = names

  def __len__(self):
    return len(self.records)

  def _record(self, index: int) -> dict:
    try:
      return self.records[index]
    except Exception as e:  # noqa: BLE001  truncated file, short read
      raise DataError(f"{self.where}: cannot read example {index} "
                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                      ) from None

  def name(self, index):
    if self.names is not None:
      return self.names[index]
    if self.name_key is not None:
      value = self._record(index)[self.name_key]
      return value.decode() if isinstance(value, bytes) else str(value)
    return f"{index:06d}"

  def size(self, index):
    if self.sizes is not None:
      return tuple(self.sizes[index])
    data = self._record(index)[self.image_key]
    try:
      with Image.open(io.BytesIO(data)) as img:  # the header only
        return img.height, img.width
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{self.where}: example {index}: cannot read the image header "
                      f"({type(e).__name__}: {e})") from None

  def _decode(self, data: bytes, index: int, what: str) -> Image.Image:
    try:
      img = Image.open(io.BytesIO(data))
      img.load()
      return img
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{self.where}: example {index} ({self.name(index)}): cannot decode "
                      f"its {what} ({type(e).__name__}: {e})") from None

  def load(self, index):
    record = self._record(index)
    image = np.asarray(self._decode(record[self.image_key], index, "image").convert("RGB"))
    label = np.asarray(self._decode(record[self.label_key], index, "label"))
    if label.ndim == 3:
      label = label[..., 0]
    if label.dtype != np.uint8:
      if label.max(initial=0) > 255:
        raise DataError(f"{self.where}: example {index}: label values up to {label.max()} do "
                        "not fit uint8")
      label = label.astype(np.uint8)
    mask = label if self.lut is None else self.lut[label]
    what = f"{self.where} example {index} ({self.name(index)})"
    base.check_pair(image, mask, len(self.class_names), what + " image", what + " label")
    return image, mask


def _skip_images(features) -> dict:
  """SkipDecoding for every Image feature: TfdsSource decodes the two it needs itself."""
  import tensorflow_datasets as tfds
  return {k: tfds.decode.SkipDecoding() for k, f in features.items()
          if isinstance(f, tfds.features.Image)}


def open_prepared(data_cfg, split: str) -> TfdsSource:
  """Split `split` of the copy of data_cfg.name that prepare() wrote in data_cfg.tfds_dir."""
  name, tfds_dir = data_cfg.name, data_cfg.tfds_dir
  spec = DATASETS.get(name)
  builder = builder_class(name)(data_dir=tfds_dir)
  command = (f"python -m segjax.tools.prepare_data --dataset={name} "
             f"--manual_dir=<the {name} files> --data_dir={tfds_dir}")
  if not _is_prepared(builder):
    raise DataError(f"data.tfds_dir={tfds_dir} holds no prepared copy of {name} (expected "
                    f"{builder.data_dir}/dataset_info.json); write it with: {command}")
  if split not in builder.info.splits:
    raise DataError(f"{builder.data_dir}: split {split!r} of {name} was not prepared (it has "
                    f"{', '.join(sorted(builder.info.splits))}); rewrite it with: {command} "
                    f"--splits=...,{split} --overwrite")
  index = (builder.info.metadata or {}).get("splits", {}).get(split)
  records = builder.as_data_source(split, decoders=_skip_images(builder.info.features))
  if index is None or len(index["sizes"]) != len(records):
    raise DataError(f"{builder.data_dir}: metadata.json does not describe the {len(records)} "
                    f"examples of split {split!r}; the copy is damaged, rewrite it with: "
                    f"{command} --overwrite")
  class_names = spec.class_names if spec.class_names is not None else data_cfg.class_names
  if not class_names:
    raise ConfigError(f"data.class_names must list the classes of the {name} dataset")
  palette = spec.palette if spec.palette is not None else base.default_palette(
      len(class_names))
  return TfdsSource(records, image_key="image", label_key="label", class_names=class_names,
                    palette=palette, where=f"{builder.data_dir} [{split}]",
                    sizes=index["sizes"], names=index["names"])


def _pick(features, key: str, candidates: Sequence[str], field: str, what: str,
          dataset: str) -> str:
  import tensorflow_datasets as tfds
  images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  if key:
    if key not in images:
      raise ConfigError(f"data.{field}={key!r} is not an image feature of {dataset} (its image "
                        f"features: {', '.join(images) or 'none'})")
    return key
  for k in candidates:
    if k in images:
      return k
  raise ConfigError(f"{dataset} has none of the {what} features {', '.join(candidates)} (its "
                    f"image features: {', '.join(images) or 'none'}); set data.{field}")


def open_tfds(data_cfg, split: str) -> TfdsSource:
  """Split `split` (a TFDS split name, slices such as "train[:90%]" allowed) of the TFDS
  dataset data_cfg.name = "tfds:NAME[/CONFIG]", prepared in data_cfg.tfds_dir."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import file_adapters

  dataset = data_cfg.name[len(TFDS_PREFIX):]
  tfds_dir = data_cfg.get("tfds_dir", "")
  if not tfds_dir:
    raise ConfigError(f"data.name={data_cfg.name!r} reads a TFDS dataset from data.tfds_dir, "
                      "which is empty")
  if not data_cfg.class_names:
    raise ConfigError(f"data.class_names must list the classes of {data_cfg.name} (TFDS does "
                      "not carry them for segmentation labels)")
  if data_cfg.get("tfds_label_map", "") not in LABEL_MAPS:
    raise ConfigError(f"data.tfds_label_map={data_cfg.tfds_label_map!r}; known: "
                      f"{', '.join(repr(k) for k in LABEL_MAPS)}")
  build = (f"tfds build {dataset} --data_dir={tfds_dir} --file_format=array_record "
           "[--manual_dir=...]")
  try:
    builder = tfds.builder(dataset, data_dir=tfds_dir)
  except Exception as e:  # noqa: BLE001  DatasetNotFoundError, a bad config name...
    raise DataError(f"{data_cfg.name}: TFDS has no such dataset or config, and {tfds_dir} holds "
                    f"none ({type(e).__name__}: {str(e).splitlines()[0]})") from None
  if not _is_prepared(builder):
    raise DataError(f"data.tfds_dir={tfds_dir} holds no prepared {dataset} (expected "
                    f"{builder.data_dir}); prepare it with: {build}")
  if builder.info.file_format != file_adapters.FileFormat.ARRAY_RECORD:
    raise DataError(f"{builder.data_dir} holds {dataset} as {builder.info.file_format.value}; "
                    f"random access needs ArrayRecord: {build}, or tfds convert_format "
                    f"--dataset_version_dir={builder.data_dir} --out_file_format=array_record")
  base_split = split.split("[", 1)[0]
  if base_split not in builder.info.splits:
    raise ConfigError(f"{data_cfg.name} has no split {split!r} (its splits: "
                      f"{', '.join(sorted(builder.info.splits))}); set data.train_split / "
                      "data.eval_split to TFDS split names")
  features = builder.info.features
  image_key = _pick(features, data_cfg.get("tfds_image_key", ""), IMAGE_KEYS,
                    "tfds_image_key", "image", data_cfg.name)
  label_key = _pick(features, data_cfg.get("tfds_label_key", ""), LABEL_KEYS,
                    "tfds_label_key", "label", data_cfg.name)
  name_key = next((k for k in NAME_KEYS
                   if k in features.keys() and isinstance(features[k], tfds.features.Text)),
                  None)
  records = builder.as_data_source(split, decoders=_skip_images(features))
  class_names = tuple(data_cfg.class_names)
  return TfdsSource(records, image_key=image_key, label_key=label_key,
                    class_names=class_names, palette=base.default_palette(len(class_names)),
                    where=f"{data_cfg.name} [{split}]",
                    lut=LABEL_MAPS[data_cfg.get("tfds_label_map", "")](), name_key=name_key)
