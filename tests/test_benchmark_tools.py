"""segjax.tools.benchmark and its helpers: the op-by-op profile and the reference timings."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from segjax import evaluate
from segjax.tools import op_profile
from tests.conftest import REPO


def test_instruction_table_names_kinds_and_model_paths():
  def f(w, x):  # scopes as flax names them: the model (wrapped by jvp/transpose), submodules
    with jax.named_scope("model"), jax.named_scope("encoder"), jax.named_scope("conv"):
      y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y).sum()

  w, x = jnp.ones((3, 3, 4, 8)), jnp.ones((2, 16, 16, 4))
  hlo = jax.jit(jax.grad(f)).lower(w, x).compile().as_text()
  table = op_profile.instruction_table(hlo)
  convs = {n: r for n, r in table.items() if "convolution" in r["kind"]}
  assert convs, table
  assert len(convs) >= 2, convs  # the forward convolution and the kernel gradient's
  assert "fwd encoder/conv" in {r["where"] for r in convs.values()}, convs
  # XLA drops the metadata of some rewritten instructions (here the gradient's convolution);
  # the fusion around it keeps the path, marked as the backward pass.
  assert "bwd encoder/conv" in {r["where"] for r in table.values()}, table


def test_a_program_s_profile_accounts_for_its_work():
  """Run in a subprocess: XLA:CPU names its thunks in traces only with the flag set before
  the backend starts."""
  code = """
import json
from segjax import evaluate
from segjax.tools import op_profile
op_profile.enable_traceme()
import jax, jax.numpy as jnp
big = jax.jit(lambda a, b: jnp.tanh(a @ b).sum() + jnp.sin(b[:8]).sum())
a = jnp.ones((768, 768))
compiled = big.lower(a, a).compile()
compiled(a, a).block_until_ready()
rows = op_profile.profile(lambda: compiled(a, a).block_until_ready(), compiled.as_text(), 3)
print(json.dumps(rows))
"""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True, timeout=300).stdout
  rows = json.loads(out.strip().splitlines()[-1])
  assert abs(sum(r["share"] for r in rows) - 1) < 1e-6
  assert all(r["ms"] >= 0 for r in rows)
  top = rows[0]  # the 768^3 matmul (0.9 GFLOP) outweighs the 8-row sine by far
  assert "dot" in top["kind"], rows
  assert top["share"] > 0.5, rows


def test_benchmark_compares_with_hf_mmseg_the_window_loop_and_the_pipeline():
  """The whole tool on SegFormer-B0 at small sizes: every reference runs, the input pipeline
  reads full-size frames, and the ratios are the quotients of the printed throughputs."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run(
      [sys.executable, "-m", "segjax.tools.benchmark", "--config=configs/segformer_b0_city.py",
       "--config.data.crop_size=(64, 64)", "--batch_size=1", "--steps=1", "--warmup=1",
       "--compare=hf", "--compare=loop", "--compare=mmseg", "--slide_image=96,160",
       "--config.eval.mode=slide", "--config.eval.crop_size=(64, 64)",
       "--config.eval.stride=(48, 48)", "--pipeline", "--pipeline_frames=2",
       "--pipeline_batches=1"],
      cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=900).stdout
  r = json.loads(out.strip().splitlines()[-1])
  assert r["train_vs_hf"] == pytest.approx(r["train_images_per_s"] / r["hf_train_images_per_s"],
                                           rel=0.02)
  assert r["eval_vs_hf"] == pytest.approx(r["eval_images_per_s"] / r["hf_eval_images_per_s"],
                                          rel=0.02)
  assert r["slide_windows"] == len(evaluate.slide_windows(96, 160, (64, 64), (48, 48))) == 6
  assert r["slide_vs_loop"] == pytest.approx(
      r["loop_slide_s_per_image"] / r["slide_s_per_image"], rel=0.05)
  assert r["slide_vs_mmseg"] == pytest.approx(
      r["mmseg_slide_s_per_image"] / r["slide_s_per_image"], rel=0.05)
  assert r["pipeline_data"].startswith("2 synthetic 1024x2048 PNG frames")
  assert r["pipeline_images_per_s"] > 0
  assert r["pipeline_vs_train"] == pytest.approx(
      r["pipeline_images_per_s"] / r["train_images_per_s"], rel=0.02)


def test_benchmark_compares_a_cnn_with_the_model_of_an_mmseg_config():
  """--mmseg_config: PSPNet R50-D8 against mmseg's own config of it, train step and whole
  inference at 64x64; both sides count the same parameters (the same model), and the ratios
  are the quotients of the printed throughputs. A protocol it cannot compare, or a config
  mmseg does not ship, is refused before anything is built."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  args = [sys.executable, "-m", "segjax.tools.benchmark",
          "--config=configs/pspnet_r50_d8_city.py", "--config.data.crop_size=(64, 64)",
          "--batch_size=2", "--steps=1", "--warmup=0", "--compare=mmseg",
          "--mmseg_config=pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py"]
  refused = subprocess.run(args + ["--config.eval.mode=slide"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
  assert refused.returncode != 0
  assert ("--mmseg_config times mmseg's whole-image inference against segjax's: it needs "
          "--compare=mmseg and --config.eval.mode=whole (this config's eval.mode is 'slide')"
          ) in refused.stderr
  misnamed = subprocess.run(args[:-1] + ["--mmseg_config=pspnet/nope.py",
                                         "--config.eval.mode=whole"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert misnamed.returncode != 0 and "compile_train_s" not in misnamed.stdout
  assert "mmseg 1.2.2 ships no config 'pspnet/nope.py'" in misnamed.stderr
  out = subprocess.run(args + ["--config.eval.mode=whole"], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True, timeout=900).stdout
  r = json.loads(out.strip().splitlines()[-1])
  assert r["params"] == r["mmseg_params"] == 48_975_494, r
  for k in ("train", "eval"):
    assert r[f"{k}_vs_mmseg"] == pytest.approx(
        r[f"{k}_images_per_s"] / r[f"mmseg_{k}_images_per_s"], rel=0.02)
