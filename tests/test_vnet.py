"""3-D segmentation end to end: V-Net (segjax/models/vnet.py), its Dice loss, the synthetic
volumes, the 3-D augmentation, and configs/vnet_synthetic.py through the real trainer and
evaluator (tiny widths, 16x32x48 volumes)."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from segjax import checkpoint as ckpt_lib
from segjax import evaluate, losses, models, parallel, train
from segjax.data import pipeline, transforms3d
from segjax.data.synthetic_volumes import SyntheticVolumes
from segjax.errors import ConfigError
from segjax.models import layers, vnet
from tests.conftest import load_config, require

TINY_WIDTHS = (2, 4, 8, 8, 16)


def count_params(model, shape=(1, 16, 16, 16, 1)):
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v["params"]))


def conv(cin, cout, k):
  """Parameters of a k^3 convolution (or transposed convolution) with bias."""
  return k ** 3 * cin * cout + cout


# Fig. 2 of the paper (2 classes), layer by layer; every PReLU has one slope per channel.
PAPER_TABLE = [
    conv(1, 16, 5), 16,  # stage 0: conv 1->16; + input tiled to 16, PReLU
    conv(16, 32, 2), 32, 2 * conv(32, 32, 5), 32, 32,  # down 16->32 + PReLU; 2 convs; PReLU x2
    conv(32, 64, 2), 64, 3 * conv(64, 64, 5), 2 * 64, 64,  # 3 convs: 2 inner PReLUs + 1 after +
    conv(64, 128, 2), 128, 3 * conv(128, 128, 5), 2 * 128, 128,
    conv(128, 256, 2), 256, 3 * conv(256, 256, 5), 2 * 256, 256,  # the 1/16 bottom
    conv(256, 128, 2), 128, 3 * conv(256, 256, 5), 2 * 256, 256,  # up 256->128 + 128 skip
    conv(256, 64, 2), 64, 3 * conv(128, 128, 5), 2 * 128, 128,
    conv(128, 32, 2), 32, 2 * conv(64, 64, 5), 64, 64,
    conv(64, 16, 2), 16, conv(32, 32, 5), 32,  # full size: 1 conv of 32 channels
    conv(32, 2, 1),  # 1x1x1 conv to the 2 classes
]
PAPER_PARAMS = 65_175_314
# The authors' Caffe model, github.com/faustomilletari/VNet (commit 584c150),
# Prototxt/train_noPooling_ResNet_cinque.prototxt: convs 1,1,2,3,3 / 3,2,1,1, a 5x5x5 conv to 2
# channels + PReLU before the 1x1x1, no BatchNorm. Its 27 (de)convolutions' weights + biases
# and per-channel PReLU slopes, summed from the prototxt.
PROTOTXT_PARAMS = 61_982_682
# github.com/mattmacy/vnet.pytorch (commit a00c8ea) VNet(elu=True): convs 1,1,2,3,2 / 2,2,1,1,
# BatchNorm after every conv, OutputTransition's 5x5x5 conv; sum(p.numel()) in torch. Its
# convs keep a bias before the BatchNorm and its ELUs have no parameters; segjax's norm=True
# drops that bias (house ConvBNAct) and has one PReLU slope per output channel of each conv
# instead (its own or the stage's after the sum): the same count.
PORT_PARAMS = 45_600_316


def test_param_counts_equal_the_paper_the_prototxt_and_the_port():
  assert sum(PAPER_TABLE) == PAPER_PARAMS
  assert count_params(vnet.build_vnet(2)) == PAPER_PARAMS
  prototxt = vnet.build_vnet(2, encoder_convs=(1, 1, 2, 3, 3), decoder_convs=(3, 2, 1, 1),
                             output_conv=True)
  assert count_params(prototxt) == PROTOTXT_PARAMS
  port = vnet.build_vnet(2, encoder_convs=(1, 1, 2, 3, 2), decoder_convs=(2, 2, 1, 1),
                         output_conv=True, norm=True)
  assert count_params(port) == PORT_PARAMS


def filled_variables(model, x, fill):
  """The model's variables from their shapes alone (no random init to compile): each leaf is
  fill(path names, shape)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  return jax.tree_util.tree_map_with_path(
      lambda path, s: jnp.asarray(fill([getattr(p, "key", None) for p in path], s.shape),
                                  jnp.float32), shapes)


def test_zero_convolutions_leave_exactly_the_residual_and_skip_paths():
  """With every (transposed) convolution zero, V-Net's output is its wiring alone: stage 0's
  PReLU(conv + input tiled to widths[0]), carried by the full-size skip concatenation (after
  the up-convolution's channels) through the last stage's PReLU(convs + input) into the 1x1x1
  conv; every coarser level is PReLU(0) = 0."""
  model = vnet.build_vnet(3, widths=TINY_WIDTHS)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 16, 16, 16, 1), jnp.float32)
  w_out = np.random.RandomState(1).randn(2 * TINY_WIDTHS[0], 3).astype(np.float32)
  b_out = np.array([0.5, -1.0, 2.0], np.float32)

  def fill(names, shape):
    if "out_tr" in names:
      return w_out.reshape(shape) if names[-1] == "kernel" else b_out
    return np.full(shape, 0.25 if names[-1] == "weight" else 0.0)  # PReLU slopes at init

  variables = filled_variables(model, x, fill)
  logits, aux = jax.jit(model.apply)(variables, x)
  prelu = lambda v: np.where(v >= 0, v, 0.25 * v)  # noqa: E731
  skip = prelu(prelu(np.asarray(x[..., 0])))  # stage 0's PReLU, then the last stage's
  expected = skip[..., None] * w_out[TINY_WIDTHS[0]:].sum(0) + b_out
  assert aux == ()
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


def test_folded_convolutions_equal_xla_and_flax():
  """conv_impl="fold" (the CPU default) computes what XLA's 3-D convolution and flax's
  nn.Conv / nn.ConvTranspose compute, with the same parameters."""
  import flax.linen as nn
  rng = np.random.RandomState(2)

  def fill(names, shape):
    if names[-1] == "kernel":  # He-scaled, so activations stay O(1) through the network
      return rng.randn(*shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
    if names[-1] in ("var", "scale"):
      return rng.uniform(0.5, 1.5, shape)
    return rng.uniform(-0.3, 0.3, shape)  # biases, BN shifts and means, PReLU slopes

  z = jnp.asarray(rng.randn(2, 4, 6, 8, 3), jnp.float32)
  for ours, theirs in ((vnet.Conv3D(5, 5, impl="fold"), nn.Conv(5, (5, 5, 5), padding=2)),
                       (vnet.Conv3D(5, 2, 2, impl="fold"),
                        nn.Conv(5, (2, 2, 2), strides=2, padding="VALID")),
                       (vnet.ConvTranspose3D(5, impl="fold"),
                        nn.ConvTranspose(5, (2, 2, 2), strides=(2, 2, 2), padding="VALID"))):
    p = filled_variables(ours, z, fill)
    np.testing.assert_allclose(ours.apply(p, z), theirs.apply(p, z), rtol=1e-5, atol=1e-5)
  x = jnp.asarray(rng.randn(2, 16, 16, 32, 1), jnp.float32)
  fold = vnet.build_vnet(4, widths=TINY_WIDTHS, norm=True, output_conv=True, conv_impl="fold")
  xla = vnet.build_vnet(4, widths=TINY_WIDTHS, norm=True, output_conv=True, conv_impl="xla")
  v = filled_variables(fold, x, fill)
  ours, theirs = jax.jit(fold.apply)(v, x)[0], jax.jit(xla.apply)(v, x)[0]
  assert float(jnp.std(ours)) > 0.1
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(jnp.abs(ours).max()))


def test_bad_inputs_are_config_errors():
  model = vnet.build_vnet(2, widths=TINY_WIDTHS)
  with pytest.raises(ConfigError, match="data.crop_size must have three sides"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ConfigError, match="multiples of 16"):
    model.init(jax.random.key(0), jnp.zeros((1, 16, 24, 32, 1)))
  with pytest.raises(ConfigError, match="model.decoder_convs"):
    vnet.build_vnet(2, decoder_convs=(3, 3, 2))
  with pytest.raises(ConfigError, match=r"model.loss\[0\].*bogus"):
    vnet.build_vnet(2, loss=({"name": "dice", "per_class": True, "bogus": 1},))
  with pytest.raises(ConfigError, match=r"model.loss\[0\].*include_background"):
    vnet.build_vnet(2, loss=({"name": "dice", "include_background": True},))


# ------------------------------------------------------------------------------------------
# Dice loss


def numpy_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4, 5, 6)], ids=["2d", "3d"])
def test_dice_loss_equals_numpy(shape):
  """The paper's eq. 1 per (image, class) with ignored voxels out of both sums (foreground
  classes, or all with include_background), and mmseg's joint coefficient (the default), on
  N-D logits."""
  rng = np.random.RandomState(3)
  logits = rng.randn(*shape, 3).astype(np.float32) * 2
  labels = rng.randint(0, 3, shape).astype(np.int32)
  labels[0, 0] = 255  # an ignored plane in the first image
  eps = 1e-3
  p, valid = numpy_softmax(logits.astype(np.float64)), labels != 255
  per = {}  # (image, class) -> 1 - D
  for b in range(shape[0]):
    for c in (0, 1, 2):
      pc, gc = p[b, ..., c][valid[b]], (labels[b] == c)[valid[b]]
      per[b, c] = 1 - 2 * np.sum(pc * gc) / (np.sum(pc ** 2) + eps + np.sum(gc) + eps)
  for include_background, classes in ((False, (1, 2)), (True, (0, 1, 2))):
    ours = losses.dice(jnp.asarray(logits), jnp.asarray(labels), use_sigmoid=False,
                       per_class=True, include_background=include_background)
    expected = np.mean([v for (b, c), v in per.items() if c in classes])
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
  # mmseg's DiceLoss: one coefficient per image over all classes, ignored pixels in |P|.
  target = np.eye(4)[np.clip(labels, 0, 3)][..., :3]
  joint = [1 - 2 * np.sum(p[b] * target[b]) / (np.sum(p[b] ** 2) + eps + np.sum(target[b]) + eps)
           for b in range(shape[0])]
  ours = losses.dice(jnp.asarray(logits), jnp.asarray(labels), use_sigmoid=False)
  np.testing.assert_allclose(float(ours), np.mean(joint), rtol=1e-5)


def test_dice_loss_ignores_ignored_voxels_and_has_no_background_term():
  rng = np.random.RandomState(4)
  logits = rng.randn(1, 4, 4, 4, 2).astype(np.float32)
  labels = rng.randint(0, 2, (1, 4, 4, 4)).astype(np.int32)
  labels[0, :2] = 255

  def f(lg):
    return float(losses.dice(jnp.asarray(lg), jnp.asarray(labels), use_sigmoid=False,
                             per_class=True))

  changed = logits.copy()
  changed[0, :2] = rng.randn(2, 4, 4, 2) * 5  # only ignored voxels change
  assert f(changed) == f(logits)
  # 2 classes: exactly the paper's D on the foreground channel.
  p1 = numpy_softmax(logits.astype(np.float64))[0, 2:, ..., 1]
  g1 = (labels[0, 2:] == 1).astype(np.float64)
  d = 2 * np.sum(p1 * g1) / (np.sum(p1 ** 2) + 1e-3 + np.sum(g1 ** 2) + 1e-3)
  np.testing.assert_allclose(f(logits), 1 - d, rtol=1e-5)


def test_trilinear_resize_equals_torch():
  torch = require("torch")
  x = np.random.RandomState(5).randn(2, 3, 4, 5, 2).astype(np.float32)
  ours = layers.resize_linear(jnp.asarray(x), (5, 7, 3))
  theirs = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 4, 1, 2, 3),
                                           size=(5, 7, 3), mode="trilinear",
                                           align_corners=False).permute(0, 2, 3, 4, 1)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Synthetic volumes


def test_synthetic_volumes_are_deterministic_per_seed_split_index():
  a = SyntheticVolumes("train", 4, (16, 32, 32), seed=0)
  v, m = a.load(1)
  assert v.shape == (16, 32, 32, 1) and v.dtype == np.float32
  assert m.shape == (16, 32, 32) and m.dtype == np.uint8
  again = SyntheticVolumes("train", 4, (16, 32, 32), seed=0).load(1)
  np.testing.assert_array_equal(v, again[0])
  np.testing.assert_array_equal(m, again[1])
  for other in (a.load(2), SyntheticVolumes("val", 4, (16, 32, 32), seed=0).load(1),
                SyntheticVolumes("train", 4, (16, 32, 32), seed=1).load(1)):
    assert not np.array_equal(v, other[0])


def test_synthetic_masks_are_the_shapes_geometry():
  """The label volume equals the objects painted in order with their analytical formulas
  (written here independently of the dataset), and each object's visible voxels carry its
  brightness (times its texture, 0.7..1, plus zero-mean noise)."""
  src = SyntheticVolumes("val", 3, (16, 32, 48), seed=7)
  zz, yy, xx = np.mgrid[0:16, 0:32, 0:48].astype(np.float32)
  kinds = set()
  for index in range(3):
    volume, mask, objects = src.example(index)
    expected = np.zeros(mask.shape, np.uint8)
    painted_by = np.full(mask.shape, -1)
    for k, obj in enumerate(objects):
      dz, dy, dx = zz - obj["center"][0], yy - obj["center"][1], xx - obj["center"][2]
      if obj["kind"] == 1:  # sphere
        region = dz ** 2 + dy ** 2 + dx ** 2 <= obj["radius"] ** 2
      elif obj["kind"] == 2:  # box turned by angle about the depth axis
        c, s = np.cos(obj["angle"]), np.sin(obj["angle"])
        hz, hy, hx = obj["half_sizes"]
        region = ((np.abs(dz) <= hz) & (np.abs(c * dy + s * dx) <= hy)
                  & (np.abs(-s * dy + c * dx) <= hx))
      else:  # torus about the unit axis n: (dist to axis - R)^2 + height^2 <= a^2
        n = np.asarray(obj["axis"])
        along = dz * n[0] + dy * n[1] + dx * n[2]
        radial = np.sqrt(np.maximum(dz ** 2 + dy ** 2 + dx ** 2 - along ** 2, 0))
        region = (radial - obj["major"]) ** 2 + along ** 2 <= obj["minor"] ** 2
      expected[region] = obj["kind"]
      painted_by[region] = k
      kinds.add(obj["kind"])
    np.testing.assert_array_equal(mask, expected)
    assert (volume.shape, np.asarray(src.load(index)[1]).shape) == ((16, 32, 48, 1), mask.shape)
    for k, obj in enumerate(objects):
      visible = painted_by == k
      if visible.sum() >= 50:
        mean = volume[visible, 0].mean()
        assert 0.7 * obj["brightness"] - 5 <= mean <= obj["brightness"] + 5, (obj, mean)
  assert kinds == {1, 2, 3}


# ------------------------------------------------------------------------------------------
# 3-D augmentation: aligned eagerly and inside tf.data

D, H, W, BLOCK = 16, 24, 32, 4


def coordinate_volume():
  """Channels = the voxel's own (z, y, x); the mask = its 4x4x4 block id."""
  zz, yy, xx = np.mgrid[0:D, 0:H, 0:W].astype(np.float32)
  volume = np.stack([zz, yy, xx], -1)
  mask = ((zz // BLOCK) * (H // BLOCK) * (W // BLOCK) + (yy // BLOCK) * (W // BLOCK)
          + xx // BLOCK).astype(np.uint8)
  return tf.constant(volume), tf.constant(mask)


def assert_aligned(volume, mask):
  """Every labelled voxel's mask is the block its volume coordinates name (3-D ops never
  interpolate, so this holds exactly)."""
  volume, mask = np.asarray(volume), np.asarray(mask)
  z, y, x = (volume[..., i] for i in range(3))
  blocks = (z // BLOCK) * (H // BLOCK) * (W // BLOCK) + (y // BLOCK) * (W // BLOCK) + x // BLOCK
  valid = mask != 255
  assert valid.any()
  np.testing.assert_array_equal(blocks[valid], mask[valid])


def data_cfg(**kw):
  c = ml_collections.ConfigDict(dict(crop_size=(8, 16, 24), flip_prob=0.5,
                                     flip_axes=(0, 1, 2), mean=(0.0, 0.0, 0.0),
                                     std=(1.0, 1.0, 1.0)))
  c.update(kw)
  return c


OPS = {
    "crop": lambda v, m, s: transforms3d.random_crop(v, m, s, (8, 16, 24)),
    "flip": lambda v, m, s: transforms3d.random_flip(v, m, s, 0.5),
    "pad": lambda v, m, s: transforms3d.pad_to(v, m, (20, 24, 40)),
    "train_chain": lambda v, m, s: transforms3d.train_augment(v, m, s, data_cfg()),
    "chain_padding": lambda v, m, s: transforms3d.train_augment(
        v, m, s, data_cfg(crop_size=(16, 32, 32))),
}


def run_in_tf_data(op, volume, mask, seed):
  ds = tf.data.Dataset.from_tensors((volume, mask, seed)).map(op)
  return next(iter(ds.as_numpy_iterator()))


@pytest.mark.parametrize("name", sorted(OPS))
def test_3d_ops_keep_alignment_eagerly_and_in_tf_data(name):
  volume, mask = coordinate_volume()
  flips, offsets = set(), set()
  for k in range(6):
    seed = tf.constant([k, 11], tf.int64)
    eager = OPS[name](volume, mask, seed)
    graph = run_in_tf_data(OPS[name], volume, mask, seed)
    for out_volume, out_mask in (eager, graph):
      assert out_volume.shape[:3] == out_mask.shape and np.asarray(out_mask).dtype == np.uint8
      assert_aligned(out_volume, out_mask)
    np.testing.assert_array_equal(np.asarray(eager[0]), graph[0])
    np.testing.assert_array_equal(np.asarray(eager[1]), graph[1])
    v = np.asarray(eager[0])
    flips.add(tuple(v[-1, -1, -1] < v[0, 0, 0]))  # which axes run backwards
    offsets.add(tuple(v[..., :3].min(axis=(0, 1, 2))))
  if name == "flip":  # coins per axis: several combinations over 6 seeds
    assert len(flips) >= 3
  if name in ("crop", "train_chain"):
    assert len(offsets) >= 4


def test_3d_flip_crop_and_pad_do_what_they_say():
  volume, mask = coordinate_volume()
  v, m = transforms3d.random_flip(volume, mask, tf.constant([0, 0], tf.int64), 1.0)
  np.testing.assert_array_equal(np.asarray(m), np.asarray(mask)[::-1, ::-1, ::-1])
  v, m = transforms3d.random_flip(volume, mask, tf.constant([0, 0], tf.int64), 1.0, axes=(1,))
  np.testing.assert_array_equal(np.asarray(m), np.asarray(mask)[:, ::-1])
  v, m = transforms3d.random_crop(volume, mask, tf.constant([3, 1], tf.int64), (8, 16, 24))
  z0, y0, x0 = (int(np.asarray(v)[0, 0, 0, i]) for i in range(3))
  np.testing.assert_array_equal(np.asarray(m), np.asarray(mask)[z0:z0 + 8, y0:y0 + 16,
                                                                  x0:x0 + 24])
  v, m = transforms3d.pad_to(volume, mask, (20, 24, 40))
  m, v = np.asarray(m), np.asarray(v)
  assert m.shape == (20, 24, 40) and (m[16:] == 255).all() and (m[:, :, 32:] == 255).all()
  assert (v[16:] == 0).all()
  np.testing.assert_array_equal(m[:16, :, :32], np.asarray(mask))


def test_volume_eval_batches_are_the_volumes_unresized_with_padding_examples():
  src = SyntheticVolumes("val", 3, (16, 32, 48), seed=0)
  plan = pipeline.plan_eval(src, (), 2)
  assert [b.indices for b in plan] == [(0, 1), (2, -1)]
  assert plan[0].input_size == plan[0].label_size == (16, 32, 48)
  batches = list(pipeline.eval_batches(src, plan))
  for batch, b in zip(batches, plan):
    for row, index in enumerate(b.indices):
      if index < 0:
        assert not batch["valid"][row] and (batch["label"][row] == 255).all()
        assert batch["image"][row].shape == (16, 32, 48, 1)
        continue
      volume, mask = src.load(index)
      np.testing.assert_array_equal(batch["image"][row], volume)
      np.testing.assert_array_equal(batch["label"][row], mask)


# ------------------------------------------------------------------------------------------
# The recipe through the trainer and the evaluator


def tiny_vnet_config() -> ml_collections.ConfigDict:
  """configs/vnet_synthetic.py with test widths and volumes, two steps, evaluation at step 2
  (3 volumes: the eval batch of 8 pads them with all-ignore examples)."""
  config = load_config("vnet_synthetic")
  config.model.widths = TINY_WIDTHS
  config.data.update(synthetic_train_size=16, synthetic_eval_size=3,
                     synthetic_volume_size=(16, 32, 48), crop_size=(16, 32, 32))
  config.optim.lr = 0.01
  config.train.update(batch_size=8, num_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                      num_overlays=1, async_checkpoint=False)
  config.eval.batch_size = 8
  return config


@pytest.mark.slow
def test_vnet_recipe_trains_and_evaluates_volumes(tmp_path):
  config = tiny_vnet_config()
  model = models.build_model(config)
  assert model.output_losses == ((("dice", 1.0, (("include_background", True),
                                                  ("per_class", True),
                                                  ("use_sigmoid", False))),),)
  results = train.train_and_evaluate(config, str(tmp_path))
  cm = np.asarray(results["confusion_matrix"], np.int64)
  assert results["num_images"] == 3 and cm.sum() == results["num_pixels"] == 3 * 16 * 32 * 48
  with np.errstate(invalid="ignore"):
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
  names = ("background", "sphere", "box", "torus")
  for name, v in zip(names, iou):
    if np.isnan(v):  # a class neither labelled nor predicted
      assert results["IoU"][name] is None and results["Dice"][name] is None
      continue
    assert results["IoU"][name] == pytest.approx(v, rel=1e-12)
    assert results["Dice"][name] == pytest.approx(2 * v / (1 + v), rel=1e-12)
  assert results["mIoU"] == pytest.approx(np.nanmean(iou)) and np.isfinite(results["mDice"])
  assert results["mDice"] == pytest.approx(np.nanmean(2 * iou / (1 + iou)))
  assert "mBIoU" not in results  # Boundary IoU is a 2-D measure
  saved = json.load(open(tmp_path / "eval_results.json"))
  assert saved["step"] == 2 and saved["confusion_matrix"] == cm.tolist()
  overlays = sorted((tmp_path / "overlays").iterdir())  # the middle slice, 3 panels wide
  assert [p.name for p in overlays] == ["step2_0.png"]
  from PIL import Image
  assert np.asarray(Image.open(overlays[0])).shape == (32, 3 * 48, 3)
  # The checkpoint restores into the 5-D model, and --mode=evaluate scores it identically.
  abstract = evaluate.abstract_variables(model, config, parallel.make_mesh())
  step, variables = ckpt_lib.Checkpointer(str(tmp_path)).restore_model("latest", abstract)
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(variables["params"]))
  again = evaluate.evaluate_workdir(config, str(tmp_path))
  np.testing.assert_array_equal(again["confusion_matrix"], cm)


def test_volume_configs_refuse_2d_protocols():
  config = tiny_vnet_config()
  model = models.build_model(config)
  mesh = parallel.make_mesh()
  config.eval.mode = "slide"
  with pytest.raises(ConfigError, match="volumes are evaluated whole"):
    evaluate.Predictor(model, config, mesh)
  config.eval.mode = "whole"
  config.eval.scale = (32, 32)
  with pytest.raises(ConfigError, match="eval.scale"):
    evaluate.Predictor(model, config, mesh)
  config.data.crop_size = (32, 32)
  src = SyntheticVolumes("train", 2, (16, 32, 32))
  with pytest.raises(ConfigError, match="data.crop_size"):
    pipeline.train_batches(src, config.data, seed=0, global_batch=8)
