"""Decode heads; each module registers itself in segjax.models.registry.HEADS on import.

Every module of this package is imported here, so a new head file needs no other edit.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")
