"""The survey's ResNet-based classics: DeepLab v2, RefineNet, OCNet, DenseASPP.

Evidence per model:
  * OCNet: the three heads and the stage-3 supervision give the logits of the official modules
    (tests/reference/ocnet_official.py, vendored from openseg-group/OCNet.pytorch) after a
    weight conversion, and have their parameter counts at full width.
  * DeepLab v2: the parameter count of the whole model equals that of kazuto1011's port of the
    official Caffe model (tests/reference/deeplab_v2_kazuto.py); ASPP-L gives its `_ASPP`'s
    logits; the multi-scale model's outputs are the base model's on the resized images and
    the fused one their element-wise max, resized by torch's F.interpolate; the training loss
    is the sum over the four outputs.
  * RefineNet: parameter counts, module by module, equal a table derived from
    DrSleep/refinenet-pytorch models/resnet.py (not vendored: its licence is for
    non-commercial use only); chained residual pooling checked by value.
  * DenseASPP: parameter counts, block by block, equal a table derived from the official
    models/DenseASPP.py (not vendored: the repository has no licence).
  * One recipe per model trains one step and evaluates through the trainer (tiny widths);
    test_cli.py builds every config.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses, models
from segjax.convert import torch_layout
from segjax.models import segmentor
from segjax.models.heads import refinenet_head
from segjax.models.registry import HEADS
from tests.conftest import check_one_step_run, load_config, require
from tests.test_zoo_training import tiny_run_config


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _torch_count(module) -> int:
  return sum(p.numel() for p in module.parameters())


def _init_shapes(module, *args):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args))


def _randomize(torch, module, seed=0):
  """Every parameter and BatchNorm statistic of `module` random (the official inits leave
  OCNet's attention output `W` at zero, which would hide the attention)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if p.ndim > 1:
        p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(np.prod(p.shape[1:])))
      elif name.endswith("weight"):  # a norm's scale
        p.copy_(0.5 + torch.rand(p.shape, generator=gen))
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    for name, b in module.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.1 * torch.randn(b.shape, generator=gen))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def _convert(state_dict, renames, dropped=()):
  flat = torch_layout.convert_by_name(
      {k: v.numpy() for k, v in state_dict.items()}, "test", renames,
      (r".*\.num_batches_tracked",) + tuple(dropped))
  return torch_layout.nest(flat)


def _assert_same_tree(converted, variables):
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)  # noqa: E731
  assert shapes(converted) == shapes({k: variables[k] for k in converted})


def _assert_close(ours, theirs, name=""):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
  scale = np.max(np.abs(theirs))
  assert scale > 1e-3, name
  assert np.max(np.abs(ours - theirs)) <= 1e-4 * scale, (name, np.max(np.abs(ours - theirs)))


# ------------------------------------------------------------------------------------------
# OCNet
# ------------------------------------------------------------------------------------------

_ABN = ((r"\.f_key\.0\.", ".f_key.conv."), (r"\.f_key\.1\.", ".f_key.bn."),
        (r"conv_bn_dropout\.0\.", "conv_bn_dropout.conv."),
        (r"conv_bn_dropout\.1\.", "conv_bn_dropout.bn."), (r"^cls\.", "conv_seg."))
# official module path -> segjax's, per head type (applied in order).
OC_RENAMES = {
    "base": ((r"^context\.0\.", "context_conv.conv."), (r"^context\.1\.", "context_conv.bn."),
             (r"^context\.2\.", "")) + _ABN,
    "pyramid": ((r"^context\.0\.0\.", "context_conv.conv."),
                (r"^context\.0\.1\.", "context_conv.bn."), (r"^context\.1\.", ""),
                (r"^up_dr\.0\.", "up_dr.conv."), (r"^up_dr\.1\.", "up_dr.bn.")) + _ABN,
    "asp": ((r"^context\.0\.", "context_conv.conv."), (r"^context\.1\.", "context_conv.bn."),
            (r"^context\.2\.", ""),  # into ASP_OC_Module
            (r"^context\.2\.stages\.", "stages."),
            (r"^context\.2\.conv_bn_dropout\.0\.", "context_out.conv."),
            (r"^context\.2\.conv_bn_dropout\.1\.", "context_out.bn."),
            (r"^context\.0\.", "context.conv."), (r"^context\.1\.", "context.bn."),
            (r"^(conv\d)\.0\.", r"\1.conv."), (r"^(conv\d)\.1\.", r"\1.bn.")) + _ABN,
}
DSN_RENAMES = ((r"^0\.", "conv.conv."), (r"^1\.", "conv.bn."), (r"^3\.", "conv_seg."))


@pytest.mark.parametrize("oc_type", ["base", "pyramid", "asp"])
def test_oc_heads_equal_the_official_modules(oc_type):
  """Logits of the head and of the dsn equal the official modules' at small widths, on a
  13x17 map (uneven pyramid cells, a floor-pooled ASP-OC map); full-width parameter counts
  equal the official networks' context + cls + dsn."""
  torch = require("torch")
  from tests.reference import ocnet_official as official
  cin, c, k = 32, 16, 5
  head_t = torch.nn.ModuleDict({"context": official.CONTEXTS[oc_type](cin, c),
                                "cls": official.cls(k, c)}).eval()
  dsn_t = official.dsn(k, 24, c, oc_type).eval()
  _randomize(torch, head_t, 0)
  _randomize(torch, dsn_t, 1)
  rng = np.random.RandomState(0)
  feats = [rng.randn(2, 13, 17, ch).astype(np.float32) for ch in (8, 16, 24, cin)]
  with torch.no_grad():
    x = torch.from_numpy(feats[3].transpose(0, 3, 1, 2))
    expected = head_t["cls"](head_t["context"](x)).numpy().transpose(0, 2, 3, 1)
    expected_dsn = dsn_t(torch.from_numpy(feats[2].transpose(0, 3, 1, 2))).numpy()

  dropout = 0.1 if oc_type == "asp" else 0.05
  head = HEADS.build({"name": "oc_head", "oc_type": oc_type, "channels": c, "dropout": dropout},
                     "model.decode_head", num_classes=k)
  variables = _convert(head_t.state_dict(), OC_RENAMES[oc_type], [r".*\.f_query\..*"])
  _assert_same_tree(variables, _init_shapes(head, feats))
  _assert_close(jax.jit(head.apply)(variables, feats), expected, oc_type)

  dsn = HEADS.build({"name": "oc_dsn_head", "channels": c, "act": oc_type != "pyramid"},
                    "model.auxiliary_head[0]", num_classes=k)
  variables = _convert(dsn_t.state_dict(), DSN_RENAMES)
  _assert_same_tree(variables, _init_shapes(dsn, feats))
  _assert_close(jax.jit(dsn.apply)(variables, feats), expected_dsn.transpose(0, 2, 3, 1), "dsn")

  with torch.device("meta"):  # the official widths: 2048 -> 512, 19 classes, dsn 1024 -> 512
    official_count = (_torch_count(official.CONTEXTS[oc_type]()) +
                      _torch_count(official.cls(19)) + _torch_count(official.dsn(19, 1024)))
  full = [jnp.zeros((1, 8, 8, ch)) for ch in (256, 512, 1024, 2048)]
  config = load_config(f"ocnet_{oc_type}_r101_city").model
  heads = [{k: v for k, v in cfg.items() if k not in ("loss", "loss_weight")}
           for cfg in (config.decode_head, config.auxiliary_head[0])]
  ours = sum(_count(_init_shapes(HEADS.build(cfg, "head", num_classes=19), full)["params"])
             for cfg in heads)
  assert ours == official_count
  assert official_count == {"base": 15_098_918, "pyramid": 19_960_358,
                            "asp": 19_918_246}[oc_type]


# ------------------------------------------------------------------------------------------
# DeepLab v2
# ------------------------------------------------------------------------------------------

def test_deeplab_v2_parameter_count_and_aspp_l_equal_the_reference():
  """The whole DeepLab v2 (ResNet-101 + ASPP-L, 21 classes) has the parameters of kazuto's
  port of the Caffe model; ASPP-L's logits equal its _ASPP's."""
  torch = require("torch")
  from tests.reference import deeplab_v2_kazuto as kazuto
  with torch.device("meta"):
    reference = kazuto.DeepLabV2_ResNet101_MSC(n_classes=21)
  config = load_config("deeplabv2_r101_voc")
  config.model.scales = (1.0,)  # the same parameters, traced once
  variables = _init_shapes(models.build_model(config), jnp.zeros((1, 33, 33, 3)))
  assert _count(variables["params"]) == _torch_count(reference) == 44_048_532

  aspp_t = kazuto._ASPP(32, 5, [6, 12, 18, 24]).eval()
  _randomize(torch, aspp_t)
  x = np.random.RandomState(0).randn(2, 13, 17, 32).astype(np.float32)
  with torch.no_grad():
    expected = aspp_t(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  head = HEADS.build({"name": "aspp_l_head"}, "model.decode_head", num_classes=5)
  variables = _convert(aspp_t.state_dict(), ())
  _assert_same_tree(variables, _init_shapes(head, [x]))
  _assert_close(head.apply(variables, [x]), expected, "aspp_l")


class _StrideEight(nn.Module):
  """A stand-in backbone (one stride-8 conv): the multi-scale logic, not ResNet, is tested."""

  @nn.compact
  def __call__(self, x, train=False):
    return (nn.Conv(16, (3, 3), strides=8)(x),) * 4


def test_deeplab_v2_fuses_its_scales_by_max_and_trains_on_all_four_outputs():
  """Each scale's output is the base model on the image resized by torch's F.interpolate; the
  fused output is the element-wise max of the three resized (F.interpolate) to the 1.0
  output; the loss is the sum of the four cross-entropies, weight 1 each."""
  torch = require("torch")
  F = torch.nn.functional
  config = load_config("test")
  config.model = {"name": "deeplab_v2", "backbone": {"name": "resnet", "depth": 18}}
  model = models.build_model(config).clone(backbone=_StrideEight())
  assert model.scales == (1.0, 0.75, 0.5) and model.aux_loss_weights == (1.0, 1.0, 1.0)
  x = np.random.RandomState(0).randn(2, 45, 61, 3).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  fused, scaled = jax.jit(model.apply)(variables, x)
  base = segmentor.EncoderDecoder(backbone=model.backbone, decode_head=model.decode_head)
  x_t = torch.from_numpy(x.transpose(0, 3, 1, 2))
  resized = []
  for s, out in zip(model.scales, scaled):
    xs = F.interpolate(x_t, size=(int(45 * s), int(61 * s)), mode="bilinear",
                       align_corners=False).numpy().transpose(0, 2, 3, 1)
    _assert_close(out, base.apply(variables, xs)[0], f"scale {s}")
    out_t = torch.from_numpy(np.array(out).transpose(0, 3, 1, 2))
    resized.append(F.interpolate(out_t, size=scaled[0].shape[1:3], mode="bilinear",
                                 align_corners=False).numpy().transpose(0, 2, 3, 1))
  expected = np.max(np.stack(resized), axis=0)
  assert fused.shape == scaled[0].shape == (2, 6, 8, 5)
  np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)
  winners = np.argmax(np.stack(resized), axis=0)
  assert len(np.unique(winners)) == 3  # every scale wins somewhere: the max does something

  labels = np.random.RandomState(1).randint(0, 5, (2, 45, 61)).astype(np.int32)
  total, _ = losses.segmentation_loss(fused, scaled, labels, model.aux_loss_weights,
                                      model.output_losses)
  each = sum(float(losses.cross_entropy(o, labels)) for o in (fused, *scaled))
  assert float(total) == pytest.approx(each, rel=1e-6)


# ------------------------------------------------------------------------------------------
# RefineNet
# ------------------------------------------------------------------------------------------

def _conv(cin, cout, k=3, bias=False):
  return k * k * cin * cout + (cout if bias else 0)


def _rcu(c, blocks):  # RCUBlock(c, c, blocks, 2): conv with bias, conv without
  return blocks * (_conv(c, c, bias=True) + _conv(c, c))


def _crp(c, stages):  # CRPBlock(c, c, stages): one bias-free 3x3 conv per stage
  return stages * _conv(c, c)


def refinenet_table(num_classes):
  """RefineNet.__init__ of DrSleep/refinenet-pytorch models/resnet.py (rf101), by module."""
  t = {"p_ims1d2_outl1_dimred": _conv(2048, 512), "adapt_stage1_b": _rcu(512, 2),
       "mflow_conv_g1_pool": _crp(512, 4), "mflow_conv_g1_b": _rcu(512, 3),
       "mflow_conv_g1_b3_joint_varout_dimred": _conv(512, 256)}
  for g, cin in ((2, 1024), (3, 512), (4, 256)):
    t.update({f"p_ims1d2_outl{g}_dimred": _conv(cin, 256), f"adapt_stage{g}_b": _rcu(256, 2),
              f"adapt_stage{g}_b2_joint_varout_dimred": _conv(256, 256),
              f"mflow_conv_g{g}_pool": _crp(256, 4), f"mflow_conv_g{g}_b": _rcu(256, 3)})
    if g < 4:
      t[f"mflow_conv_g{g}_b3_joint_varout_dimred"] = _conv(256, 256)
  t["clf_conv"] = _conv(256, num_classes, bias=True)
  return t


def test_refinenet_parameters_equal_the_released_model_module_by_module():
  torch = require("torch")
  from tests.reference import deeplab_v2_kazuto as kazuto
  config = load_config("refinenet_r101_city")
  config.data.num_classes = 21  # the released VOC model of the table
  params = _init_shapes(models.build_model(config), jnp.zeros((1, 64, 64, 3)))["params"]
  assert {k: _count(v) for k, v in params["decode_head"].items()} == refinenet_table(21)
  with torch.device("meta"):  # ResNet-101 without its classifier (the port's is torchvision's)
    resnet = kazuto.DeepLabV2(21, [3, 4, 23, 3], [6, 12, 18, 24])
  resnet_count = _torch_count(resnet) - _torch_count(resnet.aspp)
  assert _count(params["backbone"]) == resnet_count == 42_500_160
  assert _count(params) == 42_500_160 + sum(refinenet_table(21).values()) == 118_052_437


def test_chained_residual_pooling_by_value():
  """With identity convs, CRP(x) = x + sum_i maxpool^i(x) (5x5, stride 1, -inf padding)."""
  scipy_ndimage = require("scipy.ndimage")
  x = np.random.RandomState(0).randn(1, 9, 11, 4).astype(np.float32)
  block = refinenet_head.CRPBlock(4, 3)
  eye = np.zeros((3, 3, 4, 4), np.float32)
  eye[1, 1] = np.eye(4)
  params = {f"{i}_outvar_dimred": {"kernel": eye} for i in (1, 2, 3)}
  expected, top = x.copy(), x
  for _ in range(3):
    top = scipy_ndimage.maximum_filter(top, size=(1, 5, 5, 1), mode="constant", cval=-np.inf)
    expected = expected + top
  np.testing.assert_allclose(block.apply({"params": params}, x), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# DenseASPP
# ------------------------------------------------------------------------------------------

def denseaspp_table(cin, num_classes, d0=512, d1=128):
  """DenseASPP.__init__ of DeepMotionAIResearch/DenseASPP models/DenseASPP.py (the ASPP_*
  blocks and `classification`), with DenseASPP161's d_feature0 / d_feature1, by module."""
  t = {}
  for i, d in enumerate((3, 6, 12, 18, 24)):
    width = cin + i * d1  # the input and every earlier branch
    bn_start = 2 * width if i > 0 else 0  # norm.1 (weight, bias)
    t[f"ASPP_{d}"] = bn_start + _conv(width, d0, 1, True) + 2 * d0 + _conv(d0, d1, 3, True)
  t["conv_seg"] = _conv(cin + 5 * d1, num_classes, 1, True)
  return t


@pytest.mark.parametrize("cin", [1104, 2048])  # DenseNet-161's features; ResNet-101's
def test_denseaspp_head_parameters_equal_the_official_module_by_module(cin):
  head = HEADS.build(dict(load_config("denseaspp_r101_city").model.decode_head),
                     "model.decode_head", num_classes=19)
  feats = [jnp.zeros((1, 8, 8, cin))]
  params = _init_shapes(head, feats)["params"]
  assert {k: _count(v) for k, v in params.items()} == denseaspp_table(cin, 19)
  assert _count(params) == {1104: 6_483_587, 2048: 8_925_715}[cin]


# ------------------------------------------------------------------------------------------
# The recipes through the trainer
# ------------------------------------------------------------------------------------------

def tiny_classic_config(name):
  """tiny_run_config with the recipe's output stride kept (stride 8: the OC, ASPP and
  DenseASPP heads then see 4x4 maps of the 32x32 crops) and DenseASPP's branches shrunk."""
  config = tiny_run_config(name)
  backbone = load_config(name).model.backbone
  for key in ("strides", "dilations", "contract_dilation"):
    if key in backbone:
      config.model.backbone[key] = backbone[key]
  if "branch_channels" in config.model.decode_head:
    config.model.decode_head.branch_channels = 8
  return config


# One recipe per model: a run costs 20-90 s on 2 CPU cores, most of it compiling the random
# init and the train step. ocnet_base / ocnet_pyramid differ from ocnet_asp only in the head
# (tested against the official modules above; test_cli builds their configs); add them here
# to run them through the trainer too.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv2_r101_voc", "refinenet_r101_city",
                                  "ocnet_asp_r101_city", "denseaspp_r101_city"])
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """test_zoo_training's check on tiny_classic_config(name): one step, evaluation, checkpoint."""
  config = tiny_classic_config(name)
  check_one_step_run(config, tmp_path)
