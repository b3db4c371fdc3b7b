"""Sums of bfloat16/float16 arrays accumulate in float32 on CPU.

Autodiff turns every broadcast of a parameter in the forward pass (a bias, a norm's scale, a
depthwise kernel multiplied into each pixel) into a `reduce_sum` of the cotangent over the
batch and spatial axes, in the cotangent's dtype. Under `model.dtype="bfloat16"` that is a
bfloat16 sum of up to millions of terms, and XLA:CPU accumulates it in bfloat16: a sum over
16x24x24 values had 16% relative error, and the gradients of MiT's depthwise kernels and of
biases had cosine 0.2-0.8 to the float32 ones, so the quickstart stalled (mIoU 0.16 vs 0.59
after 300 steps). `jnp.sum` upcasts by itself; `lax.reduce_sum_p` does not.

This module re-registers the CPU lowering of `reduce_sum_p` so that a bfloat16/float16 operand
is converted to float32, summed, and converted back: the result is the exact sum rounded once.
Other dtypes and other backends keep JAX's own lowering (TPUs accumulate in float32 anyway;
GPUs were not measured). Imported by segjax.models, so every model program gets it.
"""
import numpy as np
from jax._src.interpreters import mlir  # no public API to replace a primitive's lowering
from jax._src.lax import lax as lax_internal
import jax.numpy as jnp

LOW_PRECISION = (jnp.bfloat16, jnp.float16)
_jax_lowering = mlir._lowerings[lax_internal.reduce_sum_p].rule


def _reduce_sum_float32_accumulator(ctx, operand, **params):
  aval_in, = ctx.avals_in
  aval_out, = ctx.avals_out
  if aval_in.dtype not in LOW_PRECISION:
    return _jax_lowering(ctx, operand, **params)
  in32, out32 = aval_in.update(dtype=np.float32), aval_out.update(dtype=np.float32)
  summed = _jax_lowering(ctx.replace(avals_in=[in32], avals_out=[out32]),
                         mlir.convert_hlo(ctx, operand, aval_in, in32), **params)
  summed = summed[0] if isinstance(summed, (list, tuple)) else summed
  return [mlir.convert_hlo(ctx, summed, out32, aval_out)]


mlir.register_lowering(lax_internal.reduce_sum_p, _reduce_sum_float32_accumulator,
                       platform="cpu")
