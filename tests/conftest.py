"""Test set-up: 8 fake CPU devices and a shared compile cache, before JAX is imported."""
import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "segjax_test_jax_cache"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg) (the way segjax.main loads it, minus the flags)."""
  import importlib
  module = importlib.import_module(f"configs.{name}")
  return module.get_config(arg) if arg is not None else module.get_config()


def require(module: str):
  """pytest.importorskip, except under CI=true, where a reference that fails to import
  fails the test (CI installs every reference; a skip there would hide a broken check)."""
  if os.environ.get("CI") == "true":
    import importlib
    return importlib.import_module(module)
  return pytest.importorskip(module)


@pytest.fixture
def test_config():
  return load_config("test")


@pytest.fixture(scope="session", autouse=True)
def _hide_gpus_from_tf():
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
