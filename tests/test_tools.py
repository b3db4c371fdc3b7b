"""segjax.tools: summary's JSON line and benchmark's report, on the tiny test config."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from segjax import models
from tests.conftest import REPO, load_config


def run_tool(name, *args):
  proc = subprocess.run([sys.executable, "-m", f"segjax.tools.{name}", "--config=configs/test.py",
                         *args], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.strip().splitlines()


def test_summary_counts_params_and_flops():
  lines = run_tool("summary", "--size=64,96")
  out = json.loads(lines[-1])
  config = load_config("test")
  model = models.build_model(config)
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 96, 3))))
  assert out["params"] == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(v["params"]))
  assert out["size"] == [64, 96] and out["gflops"] > 0
  assert abs(out["gmacs"] - out["gflops"] / 2) < 1e-3
  assert any(l.startswith("backbone") for l in lines) and any(l.startswith("decode_head")
                                                              for l in lines)


def test_benchmark_reports_throughput_and_memory():
  out = json.loads(run_tool("benchmark", "--batch_size=8", "--steps=1", "--warmup=0",
                            "--dwconv_impl=xla")[-1])
  assert out["train_images_per_s"] > 0 and out["eval_images_per_s"] > 0
  assert out["peak_memory_gib"] > 0 and out["dwconv_impl"] == "xla"
