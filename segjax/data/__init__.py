"""Datasets: `build_source(config.data, split)` plus the tf.data pipelines in pipeline.py."""
from segjax.data.base import IGNORE_INDEX, Source, default_palette  # noqa: F401
from segjax.data import cityscapes, synthetic
from segjax.data.cityscapes import Cityscapes
from segjax.data.folder import Folder
from segjax.data.synthetic import Synthetic
from segjax.errors import ConfigError

SOURCES = ("synthetic", "cityscapes", "folder")


def class_names(data_cfg):
  """The class names of config.data's dataset, without reading any file."""
  known = {"cityscapes": cityscapes.CLASS_NAMES, "synthetic": synthetic.CLASS_NAMES}
  return known.get(data_cfg.name, tuple(data_cfg.class_names))


def palette(data_cfg):
  """(num_classes, 3) uint8 colours for drawing config.data's labels."""
  known = {"cityscapes": cityscapes.PALETTE, "synthetic": synthetic.PALETTE}
  return known.get(data_cfg.name, default_palette(data_cfg.num_classes))


def build_source(data_cfg, split: str) -> Source:
  """The Source named by data_cfg.name for `split`; checks num_classes against it."""
  name = data_cfg.name
  if name == "synthetic":
    size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_eval_size
    source = Synthetic(split, size, data_cfg.synthetic_image_size, data_cfg.synthetic_seed)
  elif name == "cityscapes":
    source = Cityscapes(data_cfg.root, split)
  elif name == "folder":
    source = Folder(data_cfg.root, split, data_cfg.class_names)
  else:
    raise ConfigError(f"data.name must be one of {', '.join(SOURCES)}, got {name!r}")
  if len(source.class_names) != data_cfg.num_classes:
    raise ConfigError(f"data.num_classes={data_cfg.num_classes} but the {name} dataset has "
                      f"{len(source.class_names)} classes")
  return source
