"""DATASETS: `data.name` -> DatasetSpec (see segjax/data/base.py)."""
from segjax.registry import Registry

DATASETS = Registry("dataset")
