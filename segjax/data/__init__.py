"""Datasets, looked up by `config.data.name` in the DATASETS registry.

Each dataset module registers a `DatasetSpec`: how to open a split from its files, its class
names and palette. `build_source(config.data, split)` returns the split as a `Source`:
read from the dataset's files under `data.root`, or, with `data.tfds_dir` set, from the
ArrayRecord copy that `python -m segjax.tools.prepare_data` wrote there (same examples,
random access, one file per shard). `data.name = "tfds:NAME[/CONFIG]"` reads a dataset that
TFDS itself ships with masks (see segjax/data/tfds.py).
"""
from segjax.data.base import IGNORE_INDEX, DatasetSpec, Source, default_palette  # noqa: F401
from segjax.data.registry import DATASETS
from segjax.data import (  # noqa: F401  (register themselves)
    ade20k, cityscapes, coco_stuff, folder, mapillary, pascal_context, synthetic, voc_aug)
from segjax.data import synthetic_city, synthetic_volumes  # noqa: F401  (register themselves)
from segjax.data.cityscapes import Cityscapes  # noqa: F401
from segjax.data.folder import Folder  # noqa: F401
from segjax.data.synthetic import Synthetic  # noqa: F401
from segjax.errors import ConfigError


TFDS_PREFIX = "tfds:"  # data.name of a dataset TFDS ships (segjax/data/tfds.py)


def _is_tfds(data_cfg) -> bool:
  return data_cfg.name.startswith(TFDS_PREFIX)


def spec(data_cfg) -> DatasetSpec:
  """The registered DatasetSpec of config.data.name."""
  return DATASETS.get(data_cfg.name)


def class_names(data_cfg):
  """The class names of config.data's dataset, without reading any file."""
  names = None if _is_tfds(data_cfg) else spec(data_cfg).class_names
  return tuple(data_cfg.class_names) if names is None else tuple(names)


def palette(data_cfg):
  """(num_classes, 3) uint8 colours for drawing config.data's labels."""
  colours = None if _is_tfds(data_cfg) else spec(data_cfg).palette
  return default_palette(data_cfg.num_classes) if colours is None else colours


def build_source(data_cfg, split: str) -> Source:
  """The split `split` of config.data's dataset; checks num_classes against it.

  "tfds:NAME" reads TFDS's own copy from data.tfds_dir; any other name reads the dataset's
  files, or with data.tfds_dir set the copy prepare_data wrote there. segjax.data.tfds is
  imported only then: importing tensorflow_datasets costs a second.
  """
  if _is_tfds(data_cfg):
    from segjax.data import tfds
    source = tfds.open_tfds(data_cfg, split)
  elif data_cfg.get("tfds_dir"):
    from segjax.data import tfds
    source = tfds.open_prepared(data_cfg, split)
  else:
    source = spec(data_cfg).open(data_cfg, split)
  if len(source.class_names) != data_cfg.num_classes:
    raise ConfigError(f"data.num_classes={data_cfg.num_classes} but the {data_cfg.name} dataset "
                      f"has {len(source.class_names)} classes")
  return source
