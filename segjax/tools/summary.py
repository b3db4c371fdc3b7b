"""Parameters per top-level module and forward GFLOPs of a config's model.

  python -m segjax.tools.summary --config=configs/segformer_b1_city.py [--size=512,512]

FLOPs come from XLA's cost analysis of the forward pass at the config's crop size (one
image), taken from the lowered program: no compilation, so it takes seconds even for
HRNet-W48 at 512x1024 (within 1% of the compiled program's count: PSPNet R50-D8 701.9 vs
706.7 GFLOPs). XLA counts a multiply-add as 2 FLOPs; papers that quote "GFLOPs" (SegFormer,
mmseg's get_flops) usually count multiply-adds, i.e. half this number, printed as GMACs.
The last line is JSON: {"params": N, "gflops": F, "gmacs": M, "size": [h, w]}.

  python -m segjax.tools.summary --config=... --train_memory [--batch_size=2]

also compiles the train step for `--batch_size` images on one device under each
`train.remat` policy the backbone takes, and prints XLA's memory analysis of each compiled
program (arguments = parameters, optimizer state and batch; temporaries = the activations
kept for the backward pass and workspace) and the train step's FLOPs, before any run starts:
what a policy saves, per device, at that per-device batch. The sizes are XLA's plan for the
backend it runs on (CPU here); a TPU or GPU compiler lays out buffers differently, so treat
them as estimates there. The JSON line then holds "train_memory": {policy: {...}}.
"""
import json

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from segjax import models, parallel, train
from segjax.errors import ConfigError
from segjax.models import layers

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_list("size", None, "h,w of the input, or d,h,w of a volume (default: "
                  "config.data.crop_size).")
flags.DEFINE_bool("train_memory", False, "Also compile the train step per train.remat policy "
                  "and print its memory (slow: one compilation per policy).")
flags.DEFINE_integer("batch_size", 2, "Images per device for --train_memory.")


def summarize(config, size=None):
  model = models.build_model(config)
  size = tuple(int(s) for s in (size or config.data.crop_size))  # (h, w), or (d, h, w)
  x = jax.ShapeDtypeStruct((1, *size, len(config.data.mean)), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  per_module = {k: sum(int(p.size) for p in jax.tree.leaves(v))
                for k, v in variables["params"].items()}
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  cost = fwd.lower(variables, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  return per_module, flops, size


def train_step_memory(config, batch_size: int, policy: str) -> dict:
  """XLA's memory analysis and FLOPs of one compiled train step (one device, `batch_size`
  images at the config's crop size) under remat `policy`. Nothing is allocated: the state
  and batch are shapes."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.remat = policy
  model = models.build_model(config)
  size = tuple(config.data.crop_size)
  x = jnp.zeros((1, *size, len(config.data.mean)), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  params = variables["params"]
  tx = train.optimizer_for(model, config, config.train.num_steps)(params)
  ema = ({"params": params} if config.optim.get("ema_decay", 0.0) > 0 else None)
  state = train.TrainState(jax.ShapeDtypeStruct((), jnp.int32), params,
                           variables.get("batch_stats", {}), jax.eval_shape(tx.init, params), ema)
  batch = {"image": jax.ShapeDtypeStruct((batch_size, *size, x.shape[-1]), jnp.float32),
           "label": jax.ShapeDtypeStruct((batch_size, *size), jnp.uint8)}
  mesh = parallel.make_mesh(jax.devices()[:1])
  step = train.jit_train_step(model, tx, config, mesh)
  compiled = step.lower(state, batch, jax.eval_shape(lambda: jax.random.key(0))).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mib = lambda n: round(int(n) / 2 ** 20, 1)  # noqa: E731
  return {"arguments_mib": mib(memory.argument_size_in_bytes),
          "temporaries_mib": mib(memory.temp_size_in_bytes),
          "outputs_mib": mib(memory.output_size_in_bytes),
          "train_gflops_per_image": round(float(cost.get("flops", 0.0)) / 1e9 / batch_size, 4)}


def train_memory(config, batch_size: int) -> dict:
  """train_step_memory for every remat policy the config's backbone takes ("none" only for
  the others)."""
  out = {}
  for policy in layers.REMAT_POLICIES:
    try:
      out[policy] = train_step_memory(config, batch_size, policy)
    except ConfigError:
      if policy == "none":
        raise
  return out


def main(argv):
  del argv
  size = tuple(int(s) for s in FLAGS.size) if FLAGS.size else None
  per_module, flops, size = summarize(FLAGS.config, size)
  shown = "x".join(map(str, size))
  total = sum(per_module.values())
  for name, n in per_module.items():
    print(f"{name:<24} {n:>14,}")
  print(f"{'total':<24} {total:>14,}")
  print(f"forward at {shown}: {flops / 1e9:.2f} GFLOPs (XLA) = {flops / 2e9:.2f} GMACs")
  summary = {"params": total, "gflops": round(flops / 1e9, 3), "gmacs": round(flops / 2e9, 3),
             "size": list(size)}
  if FLAGS.train_memory:
    crop = "x".join(map(str, FLAGS.config.data.crop_size))
    print(f"train step, {FLAGS.batch_size} image(s) of {crop} on one {jax.default_backend()} "
          "device (XLA memory analysis):")
    summary["train_memory"] = train_memory(FLAGS.config, FLAGS.batch_size)
    for policy, m in summary["train_memory"].items():
      print(f"  remat={policy:<6} arguments {m['arguments_mib']:9.1f} MiB  temporaries "
            f"{m['temporaries_mib']:9.1f} MiB  {m['train_gflops_per_image']:.1f} GFLOPs/image")
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
