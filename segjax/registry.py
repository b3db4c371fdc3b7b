"""Name -> constructor registries: models, datasets and losses are all looked up by name.

A config names an entry, e.g. `model.backbone = {"name": "mit_b1", "drop_path_rate": 0.1}`;
`Registry.build` looks the name up and passes the remaining keys as constructor arguments.
Unknown names and unknown arguments are ConfigErrors naming the config key, never a
TypeError deep inside flax.
"""
import inspect
from typing import Any, Callable, Dict, Mapping

from segjax.errors import ConfigError


class Registry:
  """A named table of constructors (flax modules or functions returning one)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Callable[..., Any]] = {}

  def register(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} registered twice")
    self._entries[name] = fn
    return fn

  def names(self):
    return sorted(self._entries)

  def get(self, name: str) -> Callable[..., Any]:
    if name not in self._entries:
      raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
    return self._entries[name]

  def build(self, cfg: Mapping[str, Any], where: str, **extra):
    """Builds `cfg["name"]` with the other keys of cfg plus `extra` as arguments.

    Args:
      cfg: mapping with a "name" key.
      where: the config path of cfg (e.g. "model.backbone"), used in error messages.
      **extra: arguments supplied by the caller (num_classes, dtype), not the config.
    """
    cfg = dict(cfg)
    if "name" not in cfg:
      raise ConfigError(f"{where}.name is missing; known {self.kind}s: {', '.join(self.names())}")
    fn = self.get(cfg.pop("name"))
    kwargs = {**cfg, **extra}
    try:
      inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
      raise ConfigError(f"{where}: {e}") from None
    return fn(**kwargs)
