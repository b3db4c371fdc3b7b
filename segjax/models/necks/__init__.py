"""Necks (between backbone and head, e.g. FPN); each module registers itself in NECKS.

Every module of this package is imported here, so a new neck file needs no other edit.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")
