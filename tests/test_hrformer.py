"""HRFormer (segjax/models/backbones/hrformer.py) against the official PyTorch code vendored in
tests/reference/hrformer_official.py: exact parameter counts and drop-path rates of the
full-size variants, equal feature maps of a tiny random model converted by
segjax.convert --format=hrformer_official, the paper's parameter figures, and the OCR
configs building a working model."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config, require

torch = require("torch")

from segjax import models, optim  # noqa: E402
from segjax.convert import __main__ as convert_main  # noqa: E402
from segjax.convert import torch_layout  # noqa: E402
from segjax.errors import CheckpointError  # noqa: E402
from segjax.models.backbones import hrformer  # noqa: E402
from segjax.models.registry import BACKBONES  # noqa: E402
from tests.reference import hrformer_official as official  # noqa: E402

# Exact counts of the official backbone (hrt_config.py's HRT_SMALL / HRT_BASE), as the
# reference builds them; test_param_counts_and_drop_paths_equal_official recomputes them.
OFFICIAL_PARAMS = {"small": 7_891_050, "base": 44_040_666}


def official_cfg(extra, drop_path_rate):
  """segjax's `extra` spec as the official cfg (the same keys, upper-cased)."""
  cfg = {"DROP_PATH_RATE": drop_path_rate}
  for s in range(1, 5):
    cfg[f"STAGE{s}"] = {k.upper(): list(v) if isinstance(v, (list, tuple)) else v
                        for k, v in extra[f"stage{s}"].items()}
  return cfg


def tiny_extra():
  """Every stream a different width, head count, window and FFN ratio; windows that do not
  divide the maps of a 67x93 input (17x24, 9x12, 5x6, 3x3), so the centre padding is
  exercised, asymmetrically too; stage 3 repeats its module."""
  extra = hrformer.hrformer_extra((8, 16, 24, 32), (1, 2, 3, 4), num_modules=(1, 2, 1),
                                  stage1_blocks=1, stage1_channels=8)
  extra["stage3"]["num_blocks"] = (1, 1, 1)
  for s, windows, ratios in ((2, (7, 5), (4, 3)), (3, (7, 5, 3), (4, 3, 2)),
                             (4, (7, 5, 3, 2), (4, 3, 2, 4))):
    extra[f"stage{s}"]["num_window_sizes"] = windows
    extra[f"stage{s}"]["num_mlp_ratios"] = ratios
  return extra


def param_count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def ours_drop_paths(backbone, x):
  """{"stage2_0/branches_0_1": rate} of every transformer block, read while tracing."""
  rates = {}

  def record(f, args, kwargs, context):
    if isinstance(context.module, hrformer.TransformerBlock) and \
        context.method_name == "__call__":
      rates["/".join(context.module.scope.path)] = context.module.drop_path
    return f(*args, **kwargs)

  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: backbone.init(jax.random.key(0), x))
  return variables, rates


def official_drop_paths(net):
  return {torch_layout.module_path(name): (m.drop_path.drop_prob
                                           if isinstance(m.drop_path, official.DropPath)
                                           else 0.0)
          for name, m in net.named_modules()
          if isinstance(m, official.GeneralTransformerBlock)}


def imagenet_head_params(channels, num_classes=1000) -> int:
  """Parameters of the official ImageNet classification head (cls/models/hrt.py _make_head
  and classifier): per stream a BottleneckDWP to 32/64/128/256 planes (x4 out, 1x1
  downsample), stride-2 depthwise-separable steps between them (with biases), a 1x1 conv to
  2048 + BN, a linear classifier."""
  heads, n = (32, 64, 128, 256), 0
  for c, h in zip(channels, heads):
    n += c * h + 9 * h + h * 4 * h + c * 4 * h + 2 * (h + h + 4 * h + 4 * h)
  for a, b in zip(heads[:-1], heads[1:]):
    a, b = 4 * a, 4 * b
    n += 9 * a + a + 2 * a + a * b + b + 2 * b
  return n + 1024 * 2048 + 2048 + 2 * 2048 + 2048 * num_classes + num_classes


# The paper reports its models' sizes as ImageNet-1K classifiers, in its ImageNet
# classification table: HRFormer-T 8.0M, HRFormer-S 13.5M, HRFormer-B 50.3M parameters.
PAPER_MILLIONS = {"tiny": 8.0, "small": 13.5, "base": 50.3}


@pytest.mark.parametrize("variant,cfg,drop_path_rate", [
    ("small", official.HRT_SMALL, 0.2),
    ("base", {**official.HRT_BASE, "DROP_PATH_RATE": 0.4}, 0.4),  # the Cityscapes script's
])
def test_param_counts_and_drop_paths_equal_official(variant, cfg, drop_path_rate):
  """Exact backbone parameter count equal to the official code's (built on torch's meta
  device: nothing allocated), the same stochastic-depth rate in every block, and with the
  official ImageNet head the paper's figure (rounded to 0.1M as the paper rounds)."""
  with torch.device("meta"):
    net = official.HighResolutionTransformer(cfg)
  theirs = sum(p.numel() for p in net.parameters())
  assert theirs == OFFICIAL_PARAMS[variant]
  backbone = BACKBONES.build({"name": f"hrformer_{variant}", "drop_path_rate": drop_path_rate},
                             "model.backbone")
  variables, rates = ours_drop_paths(backbone, jnp.zeros((1, 32, 32, 3)))
  ours = param_count(variables["params"])
  assert ours == theirs
  want = official_drop_paths(net)
  assert len(want) == 2 * (2 * 1 + 3 * 4 + 4 * 2)  # blocks: 2 per stream and module
  assert rates.keys() == want.keys()
  np.testing.assert_allclose([rates[k] for k in want], list(want.values()), atol=1e-6)
  assert max(rates.values()) == pytest.approx(drop_path_rate)
  channels = cfg["STAGE4"]["NUM_CHANNELS"]
  assert round((ours + imagenet_head_params(channels)) / 1e6, 1) == PAPER_MILLIONS[variant]


def test_tiny_param_count_matches_the_paper():
  """HRFormer-T (official cls/configs/hrt/hrt_tiny.yaml: streams 18-144 wide, 3 modules in
  stage 3) + the ImageNet head: the paper's 8.0M, a check of the head count used above."""
  extra = hrformer.hrformer_extra((18, 36, 72, 144), (1, 2, 4, 8), num_modules=(1, 3, 2))
  variables = jax.eval_shape(lambda: hrformer.HRFormer(extra=extra).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  total = param_count(variables["params"]) + imagenet_head_params((18, 36, 72, 144))
  assert round(total / 1e6, 1) == PAPER_MILLIONS["tiny"]


def random_official(extra, seed=0):
  """The official backbone for `extra`, eval mode, with every norm parameter and statistic and
  the relative position bias tables randomised (their inits are ones/zeros/0.02)."""
  torch.manual_seed(seed)
  net = official.HighResolutionTransformer(official_cfg(extra, 0.1)).eval()
  gen = torch.Generator().manual_seed(seed + 1)

  def uniform(t, lo, hi):
    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
        uniform(m.weight, 0.5, 1.5)
        uniform(m.bias, -0.5, 0.5)
      if isinstance(m, torch.nn.BatchNorm2d):
        uniform(m.running_mean, -0.5, 0.5)
        uniform(m.running_var, 0.5, 2.0)
      if isinstance(m, official.MHA_):
        m.relative_position_bias_table.copy_(
            torch.randn(m.relative_position_bias_table.shape, generator=gen))
  return net


def tiny_ocr_config(extra):
  """configs/ocr_hrformer_s_city.py with the tiny backbone and narrow heads."""
  config = load_config("ocr_hrformer_s_city")
  model = config.model.to_dict()
  model["backbone"] = {"name": "hrformer", "extra": extra, "drop_path_rate": 0.1}
  model["decode_head"][0]["channels"] = 16
  model["decode_head"][1].update(channels=16, ocr_channels=8)
  config.model = model
  return config


def test_converted_official_backbone_gives_the_same_maps(tmp_path):
  """An official checkpoint ({"model": ...} with its ImageNet head, as released) converts by
  the rename table, and the four maps equal the official code's on an odd-sized batch."""
  extra = tiny_extra()
  net = random_official(extra)
  state = dict(net.state_dict())
  state["classifier.weight"], state["final_layer.0.weight"] = torch.ones(10, 4), torch.ones(4)
  path = tmp_path / "hrt_tiny.pth"
  torch.save({"model": state}, path)
  config = tiny_ocr_config(extra)
  _, flat = convert_main.convert(str(path), str(tmp_path / "jax"), config,
                                 fmt="hrformer_official")
  assert all(k.startswith(("params/backbone/", "batch_stats/backbone/")) for k in flat)
  assert "params/backbone/stage4_0/branches_3_1/attn/attn/relative_position_bias_table" in flat
  tree = torch_layout.nest(flat)
  variables = {"params": tree["params"]["backbone"], "batch_stats": tree["batch_stats"]["backbone"]}
  backbone = BACKBONES.build(config.model.backbone, "model.backbone")
  x = np.random.RandomState(0).randn(2, 67, 93, 3).astype(np.float32)
  ours = jax.jit(backbone.apply)(variables, jnp.asarray(x))
  with torch.no_grad():
    theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  assert len(ours) == len(theirs) == 4
  for a, b in zip(ours, theirs):
    b = b.numpy().transpose(0, 2, 3, 1)
    assert a.shape == b.shape
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-4 * np.abs(b).max(), rtol=0)


def test_converter_refuses_unknown_and_missing_tensors(tmp_path):
  extra = tiny_extra()
  state = dict(random_official(extra).state_dict())
  config = tiny_ocr_config(extra)
  unknown = dict(state, **{"stage2.0.branches.0.0.attn.attn.extra.weight": torch.ones(8, 8)})
  torch.save({"model": unknown}, tmp_path / "unknown.pth")
  with pytest.raises(CheckpointError, match="stage2_0/branches_0_0/attn/attn/extra"):
    convert_main.convert(str(tmp_path / "unknown.pth"), str(tmp_path / "a"), config,
                         fmt="hrformer_official")
  del state["stage3.1.branches.2.0.mlp.dw3x3.weight"]
  torch.save({"state_dict": state}, tmp_path / "missing.pth")
  with pytest.raises(CheckpointError, match="missing"):
    convert_main.convert(str(tmp_path / "missing.pth"), str(tmp_path / "b"), config,
                         fmt="hrformer_official")


def random_variables(abstract, seed=0):
  """Concrete variables for an abstract (eval_shape) tree: kernels ~ N(0, 1/fan_in), other
  parameters ~ N(0, 0.1), BN statistics mean 0 / var 1. (Compiling flax's own init of even
  a tiny HRFormer costs tens of seconds on CPU.)"""
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name in ("var", "scale"):
      return np.ones(shape, np.float32)
    if name == "mean":
      return np.zeros(shape, np.float32)
    std = 1 / np.sqrt(np.prod(shape[:-1])) if name == "kernel" else 0.1
    return (rng.standard_normal(shape) * std).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_tiny_ocr_hrformer_gives_finite_quarter_resolution_logits():
  """configs/ocr_hrformer_s_city.py's OCR cascade on a tiny HRFormer, built from the config:
  the official loss weights and losses, logits of both stages at 1/4 resolution of an
  odd-sized input, finite in inference and in training (drop path, BN statistics)."""
  config = tiny_ocr_config(hrformer.hrformer_extra(
      (8, 16, 24, 32), (1, 2, 3, 4), num_modules=(1, 1, 1), num_blocks=1, stage1_blocks=1,
      stage1_channels=8))
  model = models.build_model(config)
  assert model.aux_loss_weights == (0.4,)
  assert [[spec[0] for spec in specs] for specs in model.output_losses] == [
      ["ohem_cross_entropy"], ["cross_entropy"]]
  x = jnp.asarray(np.random.RandomState(1).randn(1, 45, 61, 3).astype(np.float32))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  # openseg's weight-decay groups: conv and linear weights decay (depthwise ones too);
  # biases, norm layers and relative position bias tables do not; one learning rate.
  groups = optim.param_groups(abstract["params"], config.optim)
  block = "backbone/stage4_0/branches_3_0/"
  for path, decays in (("attn/attn/q_proj/kernel", True), ("mlp/dw3x3/kernel", True),
                       ("attn/attn/q_proj/bias", False), ("mlp/norm2/scale", False),
                       ("norm1/bias", False), ("attn/attn/relative_position_bias_table", False)):
    assert groups[block + path] == (1.0, decays), path
  assert groups["decode_head_1/bottleneck/conv/kernel"] == (1.0, True)
  variables = random_variables(abstract)

  @jax.jit
  def run(variables, x):
    inference = model.apply(variables, x)
    training, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(1)})
    return inference, training, updates

  (logits, aux), (train_logits, train_aux), updates = run(variables, x)
  assert logits.shape == (1, 12, 16, 19) and aux[0].shape == logits.shape
  assert train_logits.shape == logits.shape and train_aux[0].shape == logits.shape
  for out in (logits, aux[0], train_logits, train_aux[0]):
    assert np.isfinite(np.asarray(out)).all() and float(jnp.std(out)) > 0
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"],
                       variables["batch_stats"])
  assert max(jax.tree.leaves(moved)) > 0  # training updated the BN statistics


def test_config_errors_name_the_bad_key():
  from segjax.errors import ConfigError
  extra = tiny_extra()
  extra["stage3"]["num_heads"] = (1, 2)
  with pytest.raises(ConfigError, match="stage3.num_heads needs one entry per branch"):
    jax.eval_shape(lambda: hrformer.HRFormer(extra=extra).init(jax.random.key(0),
                                                                jnp.zeros((1, 32, 32, 3))))
  extra = tiny_extra()
  extra["stage4"]["num_heads"] = (1, 2, 3, 5)
  with pytest.raises(ConfigError, match="32 channels do not split into 5 heads"):
    jax.eval_shape(lambda: hrformer.HRFormer(extra=extra).init(jax.random.key(0),
                                                                jnp.zeros((1, 32, 32, 3))))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ocr_hrformer_s_city"])
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """The recipe from its config file, shrunk (tests/test_zoo_training.py): one train step,
  evaluation and a checkpoint through train.train_and_evaluate."""
  from tests.test_zoo_training import check_recipe_trains_one_step_and_evaluates
  check_recipe_trains_one_step_and_evaluates(name, tmp_path)
