"""ENet and ESPNet / ESPNet-C against their reference PyTorch models in tests/reference/ (the
authors' Torch ENet transcribed, the official ESPNet vendored): logits at full width with
random weights and BatchNorm statistics, exact parameter counts, any input size, the two-stage
ESPNet training, and the recipes' class weights."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import models
from segjax.convert import torch_layout
from segjax.models import layers
from tests.conftest import load_config, require


def _count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _build(cfg, num_classes=19, hw=(64, 64)):
  model = models.MODELS.build(cfg, "model", num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *hw, 3))))
  return model, shapes


def _numpy_variables(shapes, seed=0):
  """Random variables of the given shapes, made in NumPy (compiling the models' init, a
  graph of ~300 random initialisers, takes far longer on CPU than their forward pass): conv
  kernels ~ N(0, 1 / fan-in), BN scales and variances in [0.5, 1.5], PReLU slopes in [0, 0.5],
  biases and means small."""
  r = np.random.RandomState(seed)

  def leaf(path, x):
    key = jax.tree_util.keystr(path)
    if key.endswith("['kernel']"):
      return (r.randn(*x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(np.float32)
    if key.endswith(("['scale']", "['var']")):
      return r.uniform(0.5, 1.5, x.shape).astype(np.float32)
    if key.endswith("['weight']"):
      return r.uniform(0.0, 0.5, x.shape).astype(np.float32)
    return (0.1 * r.randn(*x.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(leaf, dict(shapes))


def _randomise(torch, module, seed=1):
  """BatchNorm statistics and affine parameters and PReLU slopes away from their init, so
  every one of them shows in the logits."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
      elif isinstance(m, torch.nn.PReLU):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g))
  return module.eval()


def _to_flax(torch, module, rename=lambda key: key):
  """The module's state dict as segjax variables: `rename` maps each key to segjax's module
  path (dots), then torch_layout's generic rules; a PReLU's (C,) `weight` stays `weight`
  (the generic rule reads a 1-D weight as a norm's scale)."""
  prelus = {n for n, m in module.named_modules() if isinstance(m, torch.nn.PReLU)}
  state = {k: v.detach().numpy() for k, v in module.state_dict().items()
           if not k.endswith("num_batches_tracked")}
  flat = torch_layout.convert_by_name(
      {rename(k): v for k, v in state.items() if k.rpartition(".")[0] not in prelus}, "ref")
  for key, value in state.items():
    if key.rpartition(".")[0] in prelus:
      flat[f"params/{torch_layout.module_path(rename(key).rpartition('.')[0])}/weight"] = value
  return torch_layout.nest(flat)


def _logits(torch, ref, model, variables, hw, seed=0):
  x = np.random.RandomState(seed).randn(2, *hw, 3).astype(np.float32)
  ours = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x))[0])
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  return ours, want


def _assert_close(ours, want):
  assert ours.shape == want.shape, (ours.shape, want.shape)
  scale = np.max(np.abs(want))
  assert scale > 0.1  # a live network
  assert np.max(np.abs(ours - want)) <= 1e-4 * scale, np.max(np.abs(ours - want)) / scale


def _same_tree(variables, shapes):
  shape = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)  # noqa: E731
  assert shape(variables) == shape(dict(shapes))


def test_prelu_equals_torch_per_channel():
  torch = require("torch")
  ref = torch.nn.PReLU(5)
  with torch.no_grad():
    ref.weight.copy_(torch.tensor([0.25, -0.5, 0.0, 1.5, 0.1]))
  x = np.random.RandomState(0).randn(2, 3, 4, 5).astype(np.float32)
  ours = layers.PReLU().apply({"params": {"weight": ref.weight.detach().numpy()}},
                              jnp.asarray(x))
  want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(ours, want, rtol=1e-6)
  init = layers.PReLU().init(jax.random.key(0), jnp.asarray(x))["params"]["weight"]
  np.testing.assert_array_equal(init, np.full(5, 0.25, np.float32))  # torch's init


# ------------------------------------------------------------------------------------------
# ENet: the authors' Torch model (tests/reference/enet_official.py) has the same names.


def test_enet_logits_and_param_count_equal_the_authors_model():
  """At 56x88 (sides multiples of 8: the Torch model's floor pooling needs them; 7x11 at
  1/8, odd) every bottleneck kind, the pooling indices and the transposed convs are
  checked. 364,311 parameters for 19 classes is the authors' Torch model's count (the paper
  rounds to 0.37M; 364,376 with the code's 20 classes, the 20th, "Unlabeled", weighted 0)."""
  torch = require("torch")
  from tests.reference import enet_official
  torch.manual_seed(0)
  ref = _randomise(torch, enet_official.ENet(19))
  model, shapes = _build({"name": "enet"})
  variables = _to_flax(torch, ref)
  _same_tree(variables, shapes)
  assert _count(shapes["params"]) == sum(p.numel() for p in ref.parameters()) == 364_311
  assert sum(p.numel() for p in enet_official.ENet(20).parameters()) == 364_376
  _assert_close(*_logits(torch, ref, model, variables, (56, 88)))


def test_enet_runs_on_any_size_with_logits_at_that_size():
  """Odd sides at every level (37 -> 19 -> 10 -> 5): ceil pooling, a zero-padded 2x2
  projection and cropped transposed convs give logits at the input size."""
  model, shapes = _build({"name": "enet"}, num_classes=5, hw=(37, 61))
  x = jnp.asarray(np.random.RandomState(0).randn(1, 37, 61, 3), jnp.float32)
  logits, aux = jax.jit(model.apply)(_numpy_variables(shapes), x)
  assert logits.shape == (1, 37, 61, 5) and aux == ()
  assert np.isfinite(np.asarray(logits)).all()


def test_enet_and_espnet_train_mode_update_batch_stats_and_use_dropout():
  """ENet's spatial dropout draws from the 'dropout' rng in training (ESPNet has none); both
  update every BatchNorm's statistics."""
  x = jax.random.normal(jax.random.key(0), (2, 32, 48, 3))
  for cfg, stochastic in (({"name": "enet"}, True), ({"name": "espnet", "q": 1}, False)):
    model, shapes = _build(cfg, num_classes=5)
    v = _numpy_variables(shapes)

    @jax.jit
    def step(v, rng, model=model):
      return model.apply(v, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    (a, _), updated = step(v, jax.random.key(1))
    (b, _), _ = step(v, jax.random.key(2))
    assert a.shape == (2, 32, 48, 5)
    assert (not np.allclose(a, b)) == stochastic, cfg
    moved = jax.tree.map(lambda p, q: not np.allclose(p, q), v["batch_stats"],
                         updated["batch_stats"])
    assert all(jax.tree.leaves(moved)), cfg


# ------------------------------------------------------------------------------------------
# ESPNet: the official PyTorch model (tests/reference/espnet_official.py).


def _espnet_key(key: str) -> str:
  """Official key -> segjax path: the ModuleList entries `level2.{i}` are `level2_{i + 1}`
  (flax would name them level2_0.., the strided modules' names)."""
  return re.sub(r"level([23])\.(\d+)\.", lambda m: f"level{m[1]}_{int(m[2]) + 1}.", key)


@pytest.mark.parametrize("name,kwargs,hw", [
    ("espnet", {}, (64, 96)),  # test/Model.py, the released weights' model
    ("espnet", {"q": 3, "skip_with_image": True}, (64, 96)),  # train/Model.py's last skip
    ("espnet_c", {}, (61, 83)),  # the encoder runs at any size, official and segjax alike
])
def test_espnet_logits_equal_the_official_model(name, kwargs, hw):
  torch = require("torch")
  from tests.reference import espnet_official
  torch.manual_seed(0)
  p, q = kwargs.get("p", 2), kwargs.get("q", 8)
  if name == "espnet":
    ref = espnet_official.ESPNet(19, p, q, skip_with_image=kwargs.get("skip_with_image", False))
    rename = _espnet_key
  else:  # segjax keeps ESPNet-C's tree under encoder/, as in ESPNet
    ref = espnet_official.ESPNet_Encoder(19, p, q)
    rename = lambda key: _espnet_key("encoder." + key)  # noqa: E731
  ref = _randomise(torch, ref)
  model, shapes = _build({"name": name, **kwargs})
  variables = _to_flax(torch, ref, rename)
  _same_tree(variables, shapes)
  assert _count(shapes["params"]) == sum(p.numel() for p in ref.parameters())
  ours, want = _logits(torch, ref, model, variables, hw)
  assert ours.shape[1:3] == (hw if name == "espnet" else (-(-hw[0] // 8), -(-hw[1] // 8)))
  _assert_close(ours, want)


def test_espnet_param_counts_equal_the_official_ones():
  """p=2, q=8. ESPNet: 364,569 at the official 20 classes, the released Cityscapes weights'
  count (pretrained/decoder/espnet_p_2_q_8.pth; the abstract's "180 times smaller" than
  PSPNet's 65.7M), 362,949 at 19; train/Model.py's variant 365,109 / 363,462. ESPNet-C:
  349,449 / 349,193."""
  torch = require("torch")
  from tests.reference import espnet_official as official
  expected = {("espnet", False, 20): 364_569, ("espnet", False, 19): 362_949,
              ("espnet", True, 20): 365_109, ("espnet", True, 19): 363_462,
              ("espnet_c", False, 20): 349_449, ("espnet_c", False, 19): 349_193}
  for (name, skip, k), n in expected.items():
    with torch.device("meta"):
      ref = (official.ESPNet(k, 2, 8, skip_with_image=skip) if name == "espnet"
             else official.ESPNet_Encoder(k, 2, 8))
    kwargs = {"skip_with_image": skip} if name == "espnet" else {}
    _, shapes = _build({"name": name, **kwargs}, num_classes=k)
    assert _count(shapes["params"]) == sum(p.numel() for p in ref.parameters()) == n


def test_espnet_runs_on_any_size_and_espnet_c_initialises_it():
  """The official ESPNet needs sides divisible by 8; segjax crops each transposed conv to
  the map it meets. ESPNet-C's variables are exactly ESPNet's `encoder/` (config.init_from
  of the second stage loads all of them)."""
  model, shapes = _build({"name": "espnet"}, num_classes=5, hw=(37, 61))
  x = jnp.asarray(np.random.RandomState(0).randn(1, 37, 61, 3), jnp.float32)
  logits, _ = jax.jit(model.apply)(_numpy_variables(shapes), x)
  assert logits.shape == (1, 37, 61, 5) and np.isfinite(np.asarray(logits)).all()
  _, encoder = _build({"name": "espnet_c"}, num_classes=5, hw=(37, 61))
  for collection in ("params", "batch_stats"):
    assert list(encoder[collection]) == ["encoder"]
    assert (jax.tree.map(lambda a: a.shape, encoder[collection]["encoder"])
            == jax.tree.map(lambda a: a.shape, shapes[collection]["encoder"]))


def test_espnet_bad_depths_and_too_few_classes_are_config_errors():
  from segjax.errors import ConfigError
  with pytest.raises(ConfigError, match=r"model.p and model.q"):
    models.MODELS.build({"name": "espnet", "p": 0}, "model", num_classes=19)
  with pytest.raises(ConfigError, match=r"at least 5 classes, got 3"):
    models.MODELS.build({"name": "espnet"}, "model", num_classes=3)
  assert models.MODELS.build({"name": "espnet_c"}, "model", num_classes=3) is not None


# ------------------------------------------------------------------------------------------
# Recipes: 1 / ln(c + p) class weights from the training labels under the config's root.


def test_log_class_weights():
  from configs import common
  weights = common.log_class_weights((50, 30, 0, 20), 200, 1.02)
  p = np.array([0.25, 0.15, 0.0, 0.1])
  np.testing.assert_allclose(weights, np.where(p > 0, 1 / np.log(1.02 + p), 0.0), rtol=1e-12)
  assert weights[2] == 0.0  # never seen
  assert max(common.log_class_weights((1,), 10 ** 9, 1.02)) == pytest.approx(1 / np.log(1.02),
                                                                              rel=1e-6)


@pytest.mark.parametrize("name,c", [("enet_city", 1.02), ("espnet_city", 1.10)])
def test_recipes_weight_the_loss_by_the_training_labels_under_root(tmp_path, name, c):
  """configs/<name>.py:ROOT: p_c = pixels of class c / all training pixels, ignored ones
  included (the authors' histograms count void pixels as a class)."""
  from tests import dataset_fixtures
  masks = list(dataset_fixtures.write_cityscapes_coarse(str(tmp_path))["train"].values())
  total = sum(m.size for m in masks)
  p = np.array([sum(int((m == k).sum()) for m in masks) / total for k in range(19)])
  config = load_config(name, str(tmp_path))
  want = np.where(p > 0, 1 / np.log(c + p), 0.0)
  np.testing.assert_allclose(config.model.loss[0]["class_weight"], want, rtol=1e-12)
  assert np.count_nonzero(want) >= 3
  assert models.build_model(config).output_losses[0][0][0] == "cross_entropy"
