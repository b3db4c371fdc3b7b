"""Test set-up: 8 fake CPU devices and a shared compile cache, before JAX is imported."""
import os
import tempfile
import time

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


def wait_for(path, text, proc, timeout=240) -> None:
  """Waits until the log file `path` (perhaps not yet created) holds `text`; fails with its
  tail if `proc` exits without writing it or `timeout` seconds pass."""
  def read():
    return open(path).read() if os.path.exists(path) else ""

  deadline = time.time() + timeout
  while time.time() < deadline:
    if text in read():
      return
    if proc.poll() is not None:  # it may have written the text and exited since the read
      assert text in read(), read()[-3000:]
      return
    time.sleep(0.2)
  raise AssertionError(f"{text!r} not in {path} after {timeout}s")


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg) (the way segjax.main loads it, minus the flags)."""
  import importlib
  module = importlib.import_module(f"configs.{name}")
  return module.get_config(arg) if arg is not None else module.get_config()


def one_step_run(config, model, eval_mode=None):
  """The recipe tests' run: `config` (a recipe) with `model` (a test-sized model dict),
  configs/test.py's data (5 classes; the recipe's mean and std kept) and evaluation, one
  train step of batch 8, and evaluation and a checkpoint at step 1. The recipe's optimizer,
  losses and BatchNorm settings stay; eval_mode=None keeps its evaluation mode too."""
  test = load_config("test")
  config.model = model
  mean, std = config.data.mean, config.data.std
  config.data = test.data
  config.data.mean, config.data.std = mean, std
  mode = eval_mode or config.eval.mode
  config.eval = test.eval
  config.eval.mode = mode
  config.train.update(batch_size=8, num_steps=1, log_every=1, eval_every=1, checkpoint_every=1,
                      num_overlays=0, async_checkpoint=False)
  return config


def check_one_step_run(config, workdir, num_images: int = 12) -> None:
  """Trains `config` (a one-step run, e.g. one_step_run's) in `workdir` and checks the run: an
  evaluation of `num_images` images (the 12 test images by default) with mIoU in [0, 1],
  eval_results.json at step 1, and step 1's checkpoint restoring into the model with finite
  parameters (a NaN loss would have stopped the run)."""
  import json
  import pathlib

  import numpy as np
  from segjax import checkpoint as ckpt_lib
  from segjax import evaluate, models, parallel, train
  workdir = pathlib.Path(workdir)
  abstract = evaluate.abstract_variables(models.build_model(config), config,
                                        parallel.make_mesh())
  results = train.train_and_evaluate(config, str(workdir))
  assert 0 <= results["mIoU"] <= 1 and results["num_images"] == num_images
  assert json.load(open(workdir / "eval_results.json"))["step"] == 1
  step, variables = ckpt_lib.Checkpointer(str(workdir)).restore_model("latest", abstract)
  assert step == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables["params"]))


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
