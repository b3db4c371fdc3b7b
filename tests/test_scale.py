"""Scale and speed options: gradient accumulation, per-block recomputation, the persistent
compilation cache and the start-up backend check."""
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from segjax import data as data_lib
from segjax import evaluate, models, parallel, runtime, train
from segjax.data import pipeline
from segjax.errors import ConfigError
from tests.conftest import REPO, load_config


def _batches(config, global_batch, n):
  source = data_lib.build_source(config.data, "train")
  it = pipeline.train_batches(source, config.data, seed=0, global_batch=global_batch)
  return [next(it) for _ in range(n)]


def _run_steps(config, mesh, batches, tx=None):
  model = models.build_model(config)
  tx_fn = (lambda p: tx) if tx is not None else train.optimizer_for(model, config, 100)
  state, tx = train.init_state(model, config, mesh, tx_fn)
  step = train.jit_train_step(model, tx, config, mesh, train.state_shardings(state),
                              donate=False)
  metrics = None
  for local in batches:
    state, metrics = step(state, parallel.global_batch(local, mesh), jax.random.key(0))
  return jax.device_get(state), jax.device_get(metrics), step


def _batchnorm_free(config):
  """The test SegFormer's encoder with a 1x1 classifier (FCNHead without convs): no
  BatchNorm, no dropout, no stochastic depth, so micro-batches see exactly what the batch does;
  crops without padding, so every micro-batch has as many labelled pixels (the loss is a mean
  over them)."""
  config.data.ratio_range = (1.0, 1.0)
  config.model.backbone.drop_path_rate = 0.0
  config.model.decode_head = {"name": "fcn_head", "in_index": -1, "num_convs": 0,
                              "concat_input": False, "dropout": 0.0}
  return config


def test_grad_accum_equals_the_whole_batch():
  config = _batchnorm_free(load_config("test"))
  config.train.batch_size = 16
  batches = _batches(config, 16, 2)
  mesh = parallel.make_mesh()
  results = {}
  for k in (1, 2):
    config.train.grad_accum = k
    results[k] = _run_steps(config, mesh, batches)
  (s1, m1, _), (s2, m2, _) = results[1], results[2]
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), s1.params,
                       jax.device_get(_run_steps(config, mesh, [])[0].params))
  assert max(jax.tree.leaves(moved)) > 1e-4  # the steps did change the parameters
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-4),
               s1.params, s2.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-4),
               s1.opt_state, s2.opt_state)


def test_grad_accum_with_batchnorm_updates_statistics_per_micro_batch():
  """With BatchNorm the micro-batches are normalised by their own statistics: the update
  differs slightly from the whole batch's, and the running averages move once per
  micro-batch (two momentum-0.9 updates instead of one)."""
  config = load_config("test")
  config.model.backbone.drop_path_rate = 0.0
  config.model.decode_head.dropout = 0.0
  config.train.batch_size = 16
  batches = _batches(config, 16, 1)
  mesh = parallel.make_mesh()
  config.train.grad_accum = 1
  whole, _, _ = _run_steps(config, mesh, batches, optax.sgd(0.1))
  config.train.grad_accum = 2
  accum, _, _ = _run_steps(config, mesh, batches, optax.sgd(0.1))
  init, _, _ = _run_steps(config, mesh, [], optax.sgd(0.1))
  var = lambda s: np.asarray(jax.tree.leaves(  # noqa: E731
      {k: v for k, v in s.batch_stats["decode_head"].items()})[-1])
  moved_whole = np.abs(var(whole) - var(init)).mean()
  moved_accum = np.abs(var(accum) - var(init)).mean()
  assert 1.5 < moved_accum / moved_whole < 2.1, (moved_whole, moved_accum)


def test_grad_accum_must_divide_the_batch(tmp_path):
  config = load_config("test")
  config.train.grad_accum = 3
  with pytest.raises(ConfigError, match="train.grad_accum=3"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config.train.grad_accum = 2  # 8 / 2 = 4 images over 8 devices
  with pytest.raises(ConfigError, match=r"train.batch_size / train.grad_accum \(2\)=4"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("backbone", ["mit", "resnet"])
def test_remat_recomputes_blocks_without_changing_the_step(backbone):
  config = load_config("test")
  config.model.backbone.drop_path_rate = 0.0
  config.model.decode_head.dropout = 0.0
  if backbone == "resnet":
    config.model.backbone = {"name": "resnet18_v1c", "base_channels": 8, "stem_channels": 8}
  batches = _batches(config, 8, 1)
  mesh = parallel.make_mesh(jax.devices()[:1])
  results = {}
  for policy in ("none", "block", "full"):
    config.train.remat = policy
    state, metrics, step = _run_steps(config, mesh, batches, optax.sgd(0.1))
    jaxpr = str(step.trace(*step_args(state, batches[0], mesh)).jaxpr)
    assert ("checkpoint" in jaxpr or "remat" in jaxpr) == (policy != "none"), policy
    results[policy] = state
  for policy in ("block", "full"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 results["none"].params, results[policy].params)


def step_args(state, local, mesh):
  return state, parallel.global_batch(local, mesh), jax.random.key(0)


def test_remat_on_a_backbone_without_it_is_one_clear_error():
  config = load_config("test")
  config.train.remat = "block"
  config.model.backbone = {"name": "poolformer_s12"}
  with pytest.raises(ConfigError, match="backbone 'poolformer_s12' has no per-block.*mit"):
    models.build_model(config)
  config.train.remat = "some"
  with pytest.raises(ConfigError, match="train.remat must be one of"):
    models.build_model(config)


def _deterministic(config):
  config.model.backbone.drop_path_rate = 0.0
  config.model.decode_head.dropout = 0.0
  config.parallel.fsdp_min_size = 256  # the test model's arrays are tiny
  return config


def test_fsdp_splits_the_state_and_trains_like_data_parallel():
  """8 devices as a 4 x 2 (data, fsdp) mesh train to the parameters of 8 x 1 (SGD with
  momentum, two steps), while every large parameter and its momentum is held half per
  device."""
  config = _deterministic(load_config("test"))
  batches = _batches(config, 8, 2)
  tx = optax.sgd(0.1, momentum=0.9)
  replicated, _, _ = _run_steps(config, parallel.mesh_for(config), batches, tx)
  config.parallel.fsdp = 2
  mesh = parallel.mesh_for(config)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  model = models.build_model(config)
  state, _ = train.init_state(model, config, mesh, lambda p: tx)
  kernel = state.params["decode_head"]["fuse"]["kernel"]  # (1, 1, 64, 16)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp")
  assert kernel.addressable_shards[0].data.shape[2] == kernel.shape[2] // 2
  momentum = state.opt_state[0].trace["decode_head"]["fuse"]["kernel"]
  assert momentum.sharding == kernel.sharding
  big = [x for x in jax.tree.leaves(state.params) if x.size >= 256]
  split = [x for x in big if not x.sharding.is_fully_replicated]
  assert len(split) >= 0.9 * len(big), (len(split), len(big))  # odd-sized ones may not split
  sharded, _, _ = _run_steps(config, mesh, batches, tx)
  moved = [float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(sharded.params), jax.tree.leaves(jax.device_get(state.params)))]
  assert max(moved) > 1e-3  # the steps changed the parameters
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               replicated.params, sharded.params)


def test_fsdp_run_checkpoints_and_evaluates_on_any_mesh(tmp_path):
  """A run on the 4 x 2 mesh saves split arrays; --mode=evaluate on 8 x 1 restores them
  replicated and scores exactly what the run scored at its last step."""
  config = _deterministic(load_config("test"))
  config.train.async_checkpoint = False
  config.parallel.fsdp = 2
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  config.parallel.fsdp = 1
  again = evaluate.evaluate_workdir(config, workdir)
  assert again["step"] == config.train.num_steps
  assert again["mIoU"] == results["mIoU"] and again["aAcc"] == results["aAcc"]


def test_fsdp_bad_sizes_are_config_errors():
  with pytest.raises(ConfigError, match="parallel.fsdp=3 must be a positive divisor of the 8"):
    parallel.make_mesh(fsdp=3)
  with pytest.raises(ConfigError, match=r"fsdp_rules entry \('kernel', 0\) splits params/a/"
                     r"kernel \(3, 4\)"):
    parallel.fsdp_dim("params/a/kernel", (3, 4), 2, 1, (("kernel", 0),))
  assert parallel.fsdp_dim("params/a/kernel", (4, 6), 2, 1, ()) == 1  # largest divisible
  assert parallel.fsdp_dim("params/a/kernel", (4, 6), 2, 1, (("a/", None),)) is None
  assert parallel.fsdp_dim("params/a/kernel", (4, 6), 2, 1, (("a/", -2),)) == 0
  assert parallel.fsdp_dim("params/a/bias", (6,), 2, 100, ()) is None  # small: replicated


def test_compile_cache_location(monkeypatch, tmp_path):
  config = ml_collections.ConfigDict({"compile_cache_dir": ""})
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert runtime.compile_cache_dir(config, str(tmp_path / "runs" / "a")) == str(
      tmp_path / "runs" / ".jax_cache")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/env/cache")
  assert runtime.compile_cache_dir(config, "runs/a") == "/env/cache"
  config.compile_cache_dir = "/mine"
  assert runtime.compile_cache_dir(config, "runs/a") == "/mine"
  config.compile_cache_dir = "off"
  assert runtime.compile_cache_dir(config, "runs/a") is None


def test_a_second_run_compiles_nothing(tmp_path):
  """Two runs of one config in sibling workdirs: the first fills <parent>/.jax_cache, the
  second finds every program it compiles there and adds no entry."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

  def run(name):
    subprocess.run(
        [sys.executable, "-m", "segjax.main", "--config=configs/test.py",
         f"--workdir={tmp_path / 'runs' / name}", "--config.train.num_steps=2",
         "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
         "--config.data.synthetic_eval_size=4", "--config.train.num_overlays=0"],
        cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=600)
    return sorted(os.listdir(tmp_path / "runs" / ".jax_cache"))

  first = run("a")
  assert len([f for f in first if f.endswith("-cache")]) >= 2, first  # train step, eval
  second = run("b")
  assert second == first


def test_backend_check_names_the_backend_and_warns_about_slow_choices(capsys):
  config = load_config("test")
  line = runtime.check_backend(config)
  assert line.startswith("backend cpu") and "8 device(s)" in line
  assert "warning" not in capsys.readouterr().err
  config.model.backbone.dwconv_impl = "xla"
  runtime.check_backend(config)
  assert "dwconv_impl='xla' is the slow depthwise convolution on CPU" in capsys.readouterr().err
  config.model.backbone.dwconv_impl = "auto"
  config.model.dtype = "bfloat16"
  runtime.check_backend(config)
  assert "model dtype bfloat16 on CPU is no faster than float32" in capsys.readouterr().err


def test_bfloat16_parameter_gradients_are_summed_in_float32():
  """The gradient of a broadcast bfloat16 bias is a reduce_sum over every pixel; on CPU it
  is accumulated in float32 (segjax.models.precision): the exact sum rounded once to
  bfloat16, where XLA:CPU's own bfloat16 accumulation was 16% off."""
  import jax.numpy as jnp
  from segjax.models import precision  # noqa: F401
  g = (jax.random.normal(jax.random.key(0), (16, 24, 24, 256)) * 1e-3).astype(jnp.bfloat16)
  exact = np.asarray(g, np.float32).sum((0, 1, 2))
  grad = jax.jit(jax.grad(lambda b, g: jnp.sum(
      (jnp.ones_like(g) + b).astype(jnp.float32) * g.astype(jnp.float32))))(
          jnp.zeros((256,), jnp.bfloat16), g)
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(grad, np.float32), exact, rtol=2 ** -8,
                             atol=2 ** -8 * np.abs(exact).max())
