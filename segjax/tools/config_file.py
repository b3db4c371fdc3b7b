"""Loading a configs/*.py file outside of absl flags (tools, converter, error messages)."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config_file(path: str, arg=None):
  """get_config(arg) of a config file; config files import `configs.common` from the repo."""
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  spec = importlib.util.spec_from_file_location("segjax_loaded_config", path)
  if spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)
