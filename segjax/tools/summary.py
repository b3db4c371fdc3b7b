"""Parameters per top-level module and forward GFLOPs of a config's model.

  python -m segjax.tools.summary --config=configs/segformer_b1_city.py [--size=512,512]

FLOPs come from XLA's cost analysis of the forward pass at the config's crop size (one
image), taken from the lowered program: no compilation, so it takes seconds even for
HRNet-W48 at 512x1024 (within 1% of the compiled program's count: PSPNet R50-D8 701.9 vs 706.7 GFLOPs). XLA counts a multiply-add as 2 FLOPs; papers that quote "GFLOPs" (SegFormer,
mmseg's get_flops) usually count multiply-adds, i.e. half this number, printed as GMACs.
The last line is JSON: {"params": N, "gflops": F, "gmacs": M, "size": [h, w]}.
"""
import json

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from segjax import models

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_list("size", None, "h,w of the input, or d,h,w of a volume (default: "
                  "config.data.crop_size).")


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
  print(json.dumps({"params": total, "gflops": round(flops / 1e9, 3),
                    "gmacs": round(flops / 2e9, 3), "size": list(size)}))


if __name__ == "__main__":
  app.run(main)
