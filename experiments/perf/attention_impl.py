"""Attention on this backend: jax.nn.dot_product_attention vs einsum + softmax vs segjax's
layers.dot_product_attention (on CPU: the einsums, or plain batched matmuls for one head).

  python experiments/perf/attention_impl.py

Times forward + backward (jit, value_and_grad) of both implementations on the attention
shapes of the zoo at 512x512, batch 2, float32, alternating them 5 times in one process and
reporting medians, so both see the same machine load. The result decides what
segjax.models.layers.dot_product_attention uses on CPU (einsum) vs GPU/TPU (jax's fused op).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from segjax.models import layers

# name: (batch, query tokens, key tokens, heads, head dim)
SHAPES = {"mit_b1_stage1": (2, 16384, 256, 1, 64), "mit_b1_stage2": (2, 4096, 256, 2, 64),
          "mit_b1_stage3": (2, 1024, 256, 5, 64), "swin_t_windows": (512, 49, 49, 3, 32),
          "vit_b_1024_tokens": (2, 1024, 1024, 12, 64)}


def einsum_attention(q, k, v):
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(q.shape[-1]))
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


def segjax_attention(q, k, v):
  """segjax's implementation (layers.dot_product_attention)."""
  return layers.dot_product_attention(q, k, v)


def jax_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v)


def main():
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), jax {jax.__version__}")
  for name, (b, tq, tk, h, d) in SHAPES.items():
    r = np.random.RandomState(0)
    q = jnp.asarray(r.randn(b, tq, h, d), jnp.float32)
    k, v = (jnp.asarray(r.randn(b, tk, h, d), jnp.float32) for _ in range(2))
    fns = {fn.__name__: jax.jit(jax.value_and_grad(
        lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) ** 2), argnums=(0, 1, 2)))
        for fn in (einsum_attention, segjax_attention, jax_attention)}
    times = {n: [] for n in fns}
    for f in fns.values():
      jax.block_until_ready(f(q, k, v))  # compile
    for _ in range(5):
      for n, f in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(f(q, k, v))
        times[n].append(time.perf_counter() - start)
    a, c, b_ = (np.median(times[n]) * 1e3 for n in ("einsum_attention",
                                                     "segjax_attention", "jax_attention"))
    print(f"{name:18s} einsum {a:7.1f} ms   segjax {c:7.1f} ms   "
          f"jax.nn.dot_product_attention {b_:7.1f} ms")


if __name__ == "__main__":
  main()
