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


def test_summary_reports_train_memory_per_remat_policy():
  """--train_memory compiles the train step per remat policy: the state is the same size
  under each, recomputation shows as extra FLOPs; a backbone without per-block recomputation
  reports "none" only."""
  report = json.loads(run_tool("summary", "--train_memory", "--batch_size=2",
                               "--config.data.crop_size=(64, 64)")[-1])["train_memory"]
  assert list(report) == ["none", "block", "full"]
  assert len({r["arguments_mib"] for r in report.values()}) == 1
  assert report["none"]["arguments_mib"] > 0 and report["none"]["temporaries_mib"] > 0
  flops = [report[p]["train_gflops_per_image"] for p in ("none", "block", "full")]
  assert flops[0] < flops[2], flops
  proc = subprocess.run(
      [sys.executable, "-m", "segjax.tools.summary", "--config=configs/fpn_poolformer_s12_ade.py",
       "--train_memory", "--batch_size=1", "--config.data.crop_size=(64, 64)"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert list(json.loads(proc.stdout.strip().splitlines()[-1])["train_memory"]) == ["none"]


def test_benchmark_reports_throughput_and_memory():
  out = json.loads(run_tool("benchmark", "--batch_size=8", "--steps=1", "--warmup=0",
                            "--dwconv_impl=xla")[-1])
  assert out["train_images_per_s"] > 0 and out["eval_images_per_s"] > 0
  assert out["peak_memory_gib"] > 0 and out["dwconv_impl"] == "xla"
  # --notrain: inference only (the real-time table's whole 1024x2048 frames), at the size
  # given, of a whole model without a backbone (ENet).
  proc = subprocess.run(
      [sys.executable, "-m", "segjax.tools.benchmark", "--config=configs/enet_city.py",
       "--notrain", "--batch_size=8", "--steps=1", "--warmup=0",
       "--config.data.crop_size=(48, 80)"], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["eval_images_per_s"] > 0 and out["image_size"] == [48, 80]
  assert "train_images_per_s" not in out and out["batch_size"] == 8 and out["model"] == "enet"
