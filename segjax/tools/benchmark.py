"""Compile time, train and eval throughput, and peak memory of a config's model.

  python -m segjax.tools.benchmark --config=configs/segformer_b1_city.py \
      --config.data.crop_size="(512, 512)" --batch_size=2 [--dwconv_impl=xla]

Model-only: random images at the crop size through the real jitted train step (loss,
backward, AdamW) and the real evaluation forward (config.eval.mode), so the numbers measure
the model, not the input pipeline. Peak memory is the accelerator's peak_bytes_in_use where
the backend reports it, else the process's peak RSS (CPU).
"""
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from segjax import evaluate, models, parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("batch_size", 0, "Global train/eval batch (default: config's).")
flags.DEFINE_integer("steps", 5, "Timed steps after warm-up.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_enum("dwconv_impl", None, ["shift", "xla"], "Override the MiT depthwise conv.")


def _time(fn, n):
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / n


def peak_memory_bytes():
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host peak RSS"


def benchmark(config, batch_size, steps, warmup):
  mesh = parallel.make_mesh()
  parallel.check_batch_size(batch_size, mesh, "--batch_size")
  model = models.build_model(config)
  h, w = config.data.crop_size
  rng = np.random.RandomState(0)
  batch = parallel.global_batch({
      "image": rng.randn(batch_size, h, w, 3).astype(np.float32),
      "label": rng.randint(0, config.data.num_classes, (batch_size, h, w)).astype(np.uint8)},
      mesh)
  state, tx = train.init_state(model, config, mesh, train.optimizer_for(model, config, 1000))
  step = train.jit_train_step(model, tx, config, mesh, donate=False)
  key = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  compile_train = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = compiled(state, batch, key)
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = compiled(holder["state"], batch, key)
    return metrics["loss"]

  train_s = _time(one_step, steps)

  logits_fn = evaluate.make_logits_fn(model, config.eval, config.data.num_classes)
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  fwd = jax.jit(lambda v, x: jnp.argmax(logits_fn(v, x), -1), in_shardings=(rep, shard),
                out_shardings=shard)
  variables = holder["state"].variables
  t0 = time.perf_counter()
  fwd_c = fwd.lower(variables, batch["image"]).compile()
  compile_eval = time.perf_counter() - t0
  for _ in range(warmup):
    fwd_c(variables, batch["image"])
  eval_s = _time(lambda: fwd_c(variables, batch["image"]), steps)
  mem, mem_kind = peak_memory_bytes()
  return {
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "image_size": [h, w], "batch_size": batch_size, "eval_mode": config.eval.mode,
      "compile_train_s": round(compile_train, 2), "compile_eval_s": round(compile_eval, 2),
      "train_step_s": round(train_s, 4), "train_images_per_s": round(batch_size / train_s, 3),
      "eval_images_per_s": round(batch_size / eval_s, 3),
      "peak_memory_gib": round(mem / 2**30, 3), "peak_memory_kind": mem_kind,
  }


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.dwconv_impl:
    with config.unlocked():
      config.model.backbone.dwconv_impl = FLAGS.dwconv_impl
  batch = FLAGS.batch_size or config.train.batch_size
  out = benchmark(config, batch, FLAGS.steps, FLAGS.warmup)
  out["model"] = dict(config.model.backbone).get("name")
  out["dwconv_impl"] = dict(config.model.backbone).get("dwconv_impl", "shift")
  for k, v in out.items():
    print(f"{k:<20} {v}")
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
