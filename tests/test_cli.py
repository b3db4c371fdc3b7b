"""The command line: overrides, one-line errors, evaluate without --config, every config."""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from segjax import models
from tests.conftest import REPO, load_config


def run_main(*args, timeout=300, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", "segjax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def error_lines(proc):
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


def test_unknown_config_key_is_one_error_line(tmp_path):
  proc = run_main("--config=configs/test.py", f"--workdir={tmp_path}", "--config.train.bogus=1")
  assert proc.returncode == 2
  assert error_lines(proc) == ["error: unknown config key 'train.bogus' (from "
                               "--config.train.bogus); see the config file and "
                               "configs/common.py for the fields"]
  assert "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == []


def test_bad_override_value_and_missing_config_file(tmp_path):
  proc = run_main("--config=configs/test.py", f"--workdir={tmp_path}",
                  "--config.train.batch_size=abc")
  assert proc.returncode == 2 and "batch_size=abc" in error_lines(proc)[0]
  proc = run_main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "configs/nope.py" in error_lines(proc)[0]
  assert "Traceback" not in proc.stderr


def test_missing_cityscapes_stops_with_path_layout_and_flag(tmp_path):
  proc = run_main("--config=configs/segformer_b1_city.py", f"--workdir={tmp_path}",
                  f"--config.data.root={tmp_path}/cs")
  assert proc.returncode == 2
  (line,) = error_lines(proc)
  assert f"{tmp_path}/cs/leftImg8bit/train" in line
  assert "gtFine" in line and "--config.data.root" in line
  assert not glob.glob(str(tmp_path / "checkpoints*"))


def test_overrides_reach_the_run_and_evaluate_uses_saved_config(tmp_path):
  proc = run_main("--config=configs/test.py", f"--workdir={tmp_path}",
                  "--config.train.num_steps=2", "--config.train.eval_every=2",
                  "--config.train.batch_size=4", "--config.data.crop_size=(24, 40)",
                  env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["train"]["num_steps"] == 2 and saved["data"]["crop_size"] == [24, 40]
  assert "step 2/2" in proc.stderr and "img/s" in proc.stderr and "ETA" in proc.stderr
  train_eval = json.load(open(tmp_path / "eval_results.json"))
  proc = run_main(f"--workdir={tmp_path}", "--mode=evaluate")  # no --config: the saved one
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.load(open(tmp_path / "eval_step2.json"))
  assert evaluated["metrics"]["mIoU"] == pytest.approx(train_eval["metrics"]["mIoU"], abs=1e-6)
  os.remove(tmp_path / "eval_step2.json")
  # The saved config as a config file takes overrides (batch 8: 12 images, last one padded).
  proc = run_main(f"--config=configs/saved.py:{tmp_path}", f"--workdir={tmp_path}",
                  "--mode=evaluate", "--config.eval.batch_size=8",
                  env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.load(open(tmp_path / "eval_step2.json"))
  assert evaluated["metrics"]["mIoU"] == pytest.approx(train_eval["metrics"]["mIoU"], abs=1e-6)


def test_evaluate_an_empty_workdir_is_one_error(tmp_path):
  proc = run_main("--config=configs/test.py", f"--workdir={tmp_path}", "--mode=evaluate")
  assert proc.returncode == 2
  assert "no checkpoint found" in error_lines(proc)[0]
  assert os.listdir(tmp_path) == []  # nothing created in a workdir that holds nothing


CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("__", "common", "saved")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_builds(name):
  config = load_config(name)
  doc = __import__(f"configs.{name}", fromlist=["x"]).__doc__
  assert "python -m segjax.main" in doc, f"configs/{name}.py docstring lacks its command"
  model = models.build_model(config)
  if len(config.data.crop_size) == 3:  # a volume model (V-Net): (1, D, H, W, C) in, voxels out
    shape = (1, *config.data.crop_size, len(config.data.mean))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape))[0], variables)
    assert out.shape == shape[:-1] + (config.data.num_classes,)
    return
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  test_size = config.eval.scale or config.data.base_size
  for h, w in (config.data.crop_size, test_size):  # e.g. 512x1024 and 1024x2048
    out = jax.eval_shape(lambda v, x: model.apply(v, x)[0], variables,
                         jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    assert out.shape[-1] == config.data.num_classes
    assert out.shape[1] >= h // 8 and out.shape[2] >= w // 8


def test_overrides_without_config_apply_to_the_saved_config(tmp_path):
  """--workdir=DIR --config.x=y (no --config) reads DIR's saved config with the override:
  predict then names the overridden (empty) input folder."""
  (tmp_path / "config.json").write_text(load_config("test").to_json())
  (tmp_path / "photos").mkdir()
  proc = run_main(f"--workdir={tmp_path}", "--mode=predict",
                  f"--config.predict.input={tmp_path / 'photos'}",
                  f"--config.predict.output={tmp_path / 'out'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert error_lines(proc) == [f"error: {tmp_path / 'photos'}: no .jpg/.jpeg/.png/.bmp images"]
