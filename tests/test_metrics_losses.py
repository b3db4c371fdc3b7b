"""The loss against a direct formula."""
import jax.numpy as jnp
import numpy as np

from segjax import losses


def test_cross_entropy_ignores_255_and_resizes():
  rng = np.random.RandomState(1)
  logits = rng.randn(2, 8, 8, 4).astype(np.float32)
  labels = rng.randint(0, 4, (2, 8, 8))
  labels[:, :3] = 255
  got = float(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  ref = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  # Logits at 1/4 resolution are upsampled to the labels.
  small = jnp.asarray(logits[:, ::4, ::4])
  assert np.isfinite(float(losses.cross_entropy(small, jnp.asarray(labels))))
  # All-ignored labels give zero, not NaN.
  assert float(losses.cross_entropy(jnp.asarray(logits), jnp.full((2, 8, 8), 255))) == 0.0
