"""The config saved in a workdir (training run or segjax.convert output), open to overrides.

  python -m segjax.main --config=configs/saved.py:weights/segformer-b1-city \
      --workdir=weights/segformer-b1-city --mode=evaluate --config.data.root=/data/cityscapes

(`--mode=evaluate --workdir=DIR` without --config also uses the saved config, but then no
--config.* override can be given.) Target: whatever the saved run reached.
"""
import json
import os

import ml_collections


def _tuples(x):
  """JSON turned the config's tuples into lists; turn them back so overrides type-check."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def get_config(workdir):
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a segjax workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))
