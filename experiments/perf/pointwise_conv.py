"""1x1 convolution forward and forward+backward: XLA's convolution vs segjax.models.layers.Conv
(the same parameters, computed as a 2-D matrix product).

  python experiments/perf/pointwise_conv.py

Shape: SegFormer-B1's decoder fuse layer at 512x512 crops, batch 2 (2x128x128x1024 -> 256),
and a ResNet-50 bottleneck expansion at 1/8 resolution (2x64x64x512 -> 2048). Medians of
alternating runs, same process, so the ratio is meaningful even when absolute times drift.
"""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.models import layers


def timed(fn, args, repeats=3):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats


def main():
  for shape, out in (((2, 128, 128, 1024), 256), ((2, 64, 64, 512), 2048)):
    x = jnp.asarray(np.random.RandomState(0).randn(*shape).astype(np.float32))
    modules = {"nn.Conv": nn.Conv(out, (1, 1)), "layers.Conv": layers.Conv(out, (1, 1))}
    variables = modules["nn.Conv"].init(jax.random.key(0), x)
    fns = {}
    for name, m in modules.items():
      fwd = jax.jit(m.apply)
      grad = jax.jit(jax.grad(lambda v, x, m=m: jnp.sum(m.apply(v, x) ** 2), argnums=(0, 1)))
      fns[name] = (fwd, grad)
    np.testing.assert_allclose(fns["nn.Conv"][0](variables, x),
                               fns["layers.Conv"][0](variables, x), rtol=1e-4, atol=1e-4)
    times = {name: ([], []) for name in fns}
    for _ in range(3):
      for name, (fwd, grad) in fns.items():
        times[name][0].append(timed(fwd, (variables, x)))
        times[name][1].append(timed(grad, (variables, x)))
    print(f"{shape} -> {out} on {jax.devices()[0].device_kind}:")
    for name, (f, g) in times.items():
      print(f"  {name:<12} forward {np.median(f):.3f} s   forward+backward {np.median(g):.3f} s")


if __name__ == "__main__":
  main()
