"""Swin, ConvNeXt and UperNet on them against HF transformers and mmsegmentation 1.2.2.

References are random-initialised (no download) with every LayerNorm, bias, relative position
bias table, layer scale and BatchNorm statistic randomised, so nothing hides behind an
identity init. Swin is compared on sizes that take every padding path (patch, window, odd
patch merging) and on maps smaller than the window. Full-size models are counted on torch's
"meta" device and with jax.eval_shape, without allocating.
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.conftest import require

torch = require("torch")
transformers = require("transformers")

from segjax import models, optim  # noqa: E402
from segjax.convert import __main__ as convert_main  # noqa: E402
from segjax.convert import hf_convnext, hf_swin, torch_layout  # noqa: E402
from segjax.errors import CheckpointError  # noqa: E402
from segjax.inference import Segmenter  # noqa: E402
from segjax.models import layers  # noqa: E402
from segjax.models.backbones.convnext import ConvNeXt  # noqa: E402
from segjax.models.backbones.swin import SwinTransformer  # noqa: E402
from tests import mmseg_reference as ref  # noqa: E402
from tests.conftest import REPO, load_config  # noqa: E402

STAGES = ["stage1", "stage2", "stage3", "stage4"]
TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TINY_CONVNEXT = dict(hidden_sizes=(8, 16, 24, 32), depths=(2, 2, 3, 2))


def swin_config(window_size=7, depths=TINY_SWIN["depths"], **kw):
  return transformers.SwinConfig(embed_dim=TINY_SWIN["embed_dim"], depths=list(depths),
                                 num_heads=list(TINY_SWIN["num_heads"]),
                                 window_size=window_size, out_features=STAGES, **kw)


def convnext_config(depths=TINY_CONVNEXT["depths"], **kw):
  return transformers.ConvNextConfig(hidden_sizes=list(TINY_CONVNEXT["hidden_sizes"]),
                                     depths=list(depths), out_features=STAGES, **kw)


def randomise(model, seed=0):
  """Every norm / bias / table / layer scale / BN statistic random, weights kept."""
  rng = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1 or "relative_position_bias_table" in name or "layer_scale" in name:
        p.copy_(torch.rand(p.shape, generator=rng) + 0.5 if name.endswith(
            ("weight", "layer_scale_parameter")) else torch.rand(p.shape, generator=rng) - 0.5)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=rng) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=rng) + 0.5)
  return model.eval()


def nchw_to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def assert_close(ours, expected):
  ours = np.asarray(ours)
  assert ours.shape == expected.shape
  scale = np.max(np.abs(expected))
  assert scale > 0.1  # a real signal, not a dead network
  err = np.max(np.abs(ours - expected))
  assert err <= 1e-4 * scale, err / scale


def backbone_params(flat):
  return torch_layout.nest(flat)["params"]["backbone"]


@functools.partial(jax.jit, static_argnums=2)
def swin_maps(params, x, window):
  """Our tiny Swin's maps with and without out norms, of NCHW `x` (one compile per shape,
  shared by the HF and mmseg tests)."""
  x = x.transpose(0, 2, 3, 1)
  normed = SwinTransformer(**TINY_SWIN, window_size=window)
  bare = SwinTransformer(**TINY_SWIN, window_size=window, out_norms=False)
  return normed.apply({"params": params}, x), bare.apply({"params": params}, x)


# ------------------------------------------------------------------ (a), (b) backbones vs HF

@pytest.mark.parametrize("window,hw", [(7, (67, 93)), (12, (101, 77))])
def test_swin_stages_equal_hf(window, hw):
  """HF SwinBackbone (SwinModel's embeddings and encoder, windows always partitioned, plus an
  out norm per stage) vs ours, normed maps and raw stage outputs (out_norms=False). At
  67x93 the stage maps are 17x24, 9x12, 5x6, 3x3: patch, window and merge padding, and
  windows larger than the map (HF's SwinModel itself fails there)."""
  torch.manual_seed(0)
  hf = randomise(transformers.SwinBackbone(swin_config(window)))
  sd = {k: v.numpy() for k, v in hf.state_dict().items()}
  params = backbone_params(hf_swin.convert_backbone(sd, hf.config.to_dict(), "hf"))
  x = np.random.RandomState(0).randn(1, 3, *hw).astype(np.float32)
  with torch.no_grad():
    expected = [nchw_to_nhwc(f) for f in hf(torch.from_numpy(x)).feature_maps]
    emb, dims = hf.embeddings(torch.from_numpy(x))
    raw = hf.encoder(emb, dims, output_hidden_states=True,
                     output_hidden_states_before_downsampling=True,
                     always_partition=True).reshaped_hidden_states[1:]
  ours, unnormed = swin_maps(params, x, window)
  assert len(ours) == len(expected) == len(unnormed) == len(raw) == 4
  for o, e, u, r in zip(ours, expected, unnormed, raw):
    assert_close(o, e)
    assert_close(u, nchw_to_nhwc(r))


def test_convnext_stages_equal_hf():
  """HF ConvNextBackbone vs ours at 67x93 (the unpadded stem floors it to 16x23)."""
  torch.manual_seed(0)
  hf = randomise(transformers.ConvNextBackbone(convnext_config()))
  sd = {k: v.numpy() for k, v in hf.state_dict().items()}
  params = backbone_params(hf_convnext.convert_backbone(sd, hf.config.to_dict(), "hf"))
  x = np.random.RandomState(0).randn(1, 3, 67, 93).astype(np.float32)
  with torch.no_grad():
    expected = [nchw_to_nhwc(f) for f in hf(torch.from_numpy(x)).feature_maps]
  ours = jax.jit(ConvNeXt(**TINY_CONVNEXT).apply)({"params": params}, x.transpose(0, 2, 3, 1))
  assert [o.shape[1:3] for o in ours] == [(16, 23), (8, 11), (4, 5), (2, 2)]
  assert len(expected) == 4
  for o, e in zip(ours, expected):
    assert_close(o, e)


@pytest.mark.parametrize("family", ["swin", "convnext"])
def test_hf_imagenet_classifier_converts_encoder_only(tmp_path, family):
  """--format=hf_backbone on an ImageNet classifier: classifier and final norm dropped (Swin)
  or the final norm into the last out norm (ConvNeXt, as mmseg's recipe), the other out norms
  fresh, every other tensor by name."""
  torch.manual_seed(0)
  if family == "swin":
    hf = transformers.SwinForImageClassification(swin_config(num_labels=3))
    backbone = {"name": "swin", **TINY_SWIN}
  else:
    hf = transformers.ConvNextForImageClassification(convnext_config(num_labels=3))
    backbone = {"name": "convnext", **TINY_CONVNEXT}
  randomise(hf).save_pretrained(tmp_path / "hf")
  config = load_config(f"upernet_{family}_t_ade")
  config.model.backbone = backbone
  config.data.crop_size = (64, 64)
  _, flat = convert_main.convert(str(tmp_path / "hf"), str(tmp_path / "jax"), config,
                                 fmt="hf_backbone")
  assert all(k.startswith("params/backbone/") for k in flat)
  norms = "params/backbone/hidden_states_norms"
  sd = hf.state_dict()
  if family == "swin":
    q = sd["swin.encoder.layers.2.blocks.1.attention.self.query.weight"].numpy()
    np.testing.assert_array_equal(
        flat["params/backbone/encoder/layers_2/blocks_1/attention/self/query/kernel"], q.T)
    fresh = STAGES
  else:
    np.testing.assert_array_equal(flat[f"{norms}/stage4/scale"],
                                  sd["convnext.layernorm.weight"].numpy())
    np.testing.assert_array_equal(
        flat["params/backbone/encoder/stages_1/layers_0/dwconv/kernel"],
        sd["convnext.encoder.stages.1.layers.0.dwconv.weight"].numpy().transpose(2, 3, 1, 0))
    fresh = STAGES[:3]
  for stage in fresh:
    assert np.all(flat[f"{norms}/{stage}/scale"] == 1)
    assert np.all(flat[f"{norms}/{stage}/bias"] == 0)


# ------------------------------------------------------------------ (c), (f) UperNet vs HF

def hf_upernet(family, num_labels=5):
  """A tiny HF UperNet with one block per stage: the backbones are tested above, and every
  block adds seconds of compile time here."""
  one = (1, 1, 1, 1)
  backbone = swin_config(depths=one) if family == "swin" else convnext_config(depths=one)
  cfg = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16,
                                   auxiliary_channels=8, num_labels=num_labels)
  torch.manual_seed(0)
  return randomise(transformers.UperNetForSemanticSegmentation(cfg))


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """family -> (HF UperNet model, its save_pretrained directory); built once."""
  out = {}
  for family in ("swin", "convnext"):
    model = hf_upernet(family)
    path = tmp_path_factory.mktemp(f"hf_upernet_{family}")
    model.save_pretrained(path)
    out[family] = (model, path)
  return out


@pytest.mark.parametrize("family", ["swin", "convnext"])
def test_upernet_logits_equal_hf(tmp_path, hf_dirs, family):
  """--format=hf_upernet: the model (backbone, head widths, aux head, classes) from HF's
  config.json, the recipe from --config (default: the tiny config of that family; the
  ConvNeXt case passes the small one); main and auxiliary logits equal HF's."""
  hf, path = hf_dirs[family]
  cfg_arg = None if family == "swin" else f"{REPO}/configs/upernet_convnext_s_ade.py"
  config, _ = convert_main.convert(str(path), str(tmp_path / "jax"), cfg_arg, fmt="hf_upernet")
  recipe = load_config(f"upernet_{family}_{'t' if family == 'swin' else 's'}_ade")
  assert config.optim.to_dict() == recipe.optim.to_dict()
  assert config.data.num_classes == 5
  assert config.model.decode_head.channels == 16
  assert config.model.auxiliary_head[0]["channels"] == 8
  assert config.model.backbone.name == family
  assert config.model.backbone.drop_path_rate == recipe.model.backbone.drop_path_rate

  seg = Segmenter.from_workdir(str(tmp_path / "jax"))
  x = np.random.RandomState(0).randn(1, 3, 67, 93).astype(np.float32)
  with torch.no_grad():
    out = hf(pixel_values=torch.from_numpy(x))
    features = hf.backbone(torch.from_numpy(x)).feature_maps
    aux = nchw_to_nhwc(hf.auxiliary_head(features))
  logits, (ours_aux,) = jax.jit(seg.model.apply)(seg.variables, x.transpose(0, 2, 3, 1))
  assert_close(layers.resize_bilinear(logits, (67, 93)), nchw_to_nhwc(out.logits))
  assert_close(ours_aux, aux)


def test_hf_upernet_refuses_unknown_and_missing_tensors(tmp_path, hf_dirs):
  _, path = hf_dirs["swin"]
  sd = load_file(str(path / "model.safetensors"))
  for name, change in (("unknown", {"decode_head.extra.weight": np.zeros(3, np.float32)}),
                       ("missing", None)):
    bad = tmp_path / name
    bad.mkdir()
    (bad / "config.json").write_text((path / "config.json").read_text())
    tensors = dict(sd)
    if change:
      tensors.update(change)
      match = "no segjax counterpart: decode_head.extra.weight"
    else:
      del tensors["decode_head.fpn_bottleneck.batch_norm.running_var"]
      match = "lacks 1 parameter.*'batch_stats/decode_head/fpn_bottleneck/bn/var'"
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=match):
      convert_main.convert(str(bad), str(tmp_path / f"jax_{name}"), fmt="hf_upernet")
    assert not (tmp_path / f"jax_{name}").exists()


# ------------------------------------------------------------------ (d) full-size counts

# Backbone arguments of HF's full-size configs (UperNet: hidden 512, aux 256, 150 labels).
FULL = {
    "upernet_swin_t_ade": ("swin", dict(embed_dim=96, depths=[2, 2, 6, 2],
                                        num_heads=[3, 6, 12, 24])),
    "upernet_swin_s_ade": ("swin", dict(embed_dim=96, depths=[2, 2, 18, 2],
                                        num_heads=[3, 6, 12, 24])),
    "upernet_swin_b_ade": ("swin", dict(embed_dim=128, depths=[2, 2, 18, 2],
                                        num_heads=[4, 8, 16, 32])),
    "upernet_convnext_t_ade": ("convnext", dict(hidden_sizes=[96, 192, 384, 768],
                                                depths=[3, 3, 9, 3])),
    "upernet_convnext_s_ade": ("convnext", dict(hidden_sizes=[96, 192, 384, 768],
                                                depths=[3, 3, 27, 3])),
    "upernet_convnext_b_ade": ("convnext", dict(hidden_sizes=[128, 256, 512, 1024],
                                                depths=[3, 3, 27, 3])),
}
# The figures both sides reach (pinned so that neither can drift).
KNOWN = {"upernet_swin_t_ade": 59_941_862, "upernet_swin_s_ade": 81_259_766,
         "upernet_swin_b_ade": 121_279_716, "upernet_convnext_t_ade": 60_242_636,
         "upernet_convnext_s_ade": 81_877_196, "upernet_convnext_b_ade": 122_102_956}


@pytest.mark.parametrize("config_name", sorted(FULL))
def test_full_size_param_counts_equal_hf(config_name):
  family, kw = FULL[config_name]
  backbone = (transformers.SwinConfig(window_size=7, out_features=STAGES, **kw)
              if family == "swin" else transformers.ConvNextConfig(out_features=STAGES, **kw))
  with torch.device("meta"):
    hf = transformers.UperNetForSemanticSegmentation(
        transformers.UperNetConfig(backbone_config=backbone, num_labels=150))
  expected = sum(p.numel() for p in hf.parameters())
  model = models.build_model(load_config(config_name))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))
  assert ours == expected
  assert ours == KNOWN[config_name]


# ------------------------------------------------------------------ (e) mmseg's Swin, layer ids

def test_mmseg_swin_backbone_converts():
  """mmseg's SwinTransformer (fused qkv, nn.Unfold patch merging, norm0..3) with every norm
  randomised, through --format=mmseg's Swin path: the four maps equal ours at 67x93."""
  mm = ref.import_mmseg()
  torch.manual_seed(0)
  net = mm.MODELS.build(dict(type="SwinTransformer", embed_dims=16, depths=(2, 2, 2, 2),
                             num_heads=(1, 2, 2, 4), window_size=7, drop_path_rate=0.0))
  randomise(net)
  sd = {f"backbone.{k}": v.numpy() for k, v in net.state_dict().items()}
  rest, flat = hf_swin.from_mmseg(sd, "mmseg")
  assert rest == {}
  x = np.random.RandomState(0).randn(1, 3, 67, 93).astype(np.float32)
  with torch.no_grad():
    expected = [nchw_to_nhwc(f) for f in net(torch.from_numpy(x))]
  ours, _ = swin_maps(backbone_params(flat), x, 7)
  assert len(ours) == len(expected) == 4
  for o, e in zip(ours, expected):
    assert_close(o, e)


# Our ConvNeXt names -> mmpretrain's ConvNeXt names (what mmseg's rules read).
MMSEG_NAMES = (
    (r"embeddings/patch_embeddings/", "downsample_layers.0.0."),
    (r"embeddings/layernorm/", "downsample_layers.0.1."),
    (r"encoder/stages_(\d+)/downsampling_layer_([01])/", r"downsample_layers.\1.\2."),
    (r"encoder/stages_(\d+)/layers_(\d+)/dwconv/", r"stages.\1.\2.depthwise_conv."),
    (r"encoder/stages_(\d+)/layers_(\d+)/layernorm/", r"stages.\1.\2.norm."),
    (r"encoder/stages_(\d+)/layers_(\d+)/pwconv([12])/", r"stages.\1.\2.pointwise_conv\3."),
    (r"encoder/stages_(\d+)/layers_(\d+)/layer_scale_parameter", r"stages.\1.\2.gamma"),
    (r"hidden_states_norms/stage(\d)/", lambda m: f"norm{int(m[1]) - 1}."),
    (r"(kernel|scale)$", "weight"),
)


def mmseg_name(path: str) -> str:
  for pattern, repl in MMSEG_NAMES:
    path = re.sub(pattern, repl, path)
  return "backbone." + path


def test_convnext_layer_ids_equal_mmseg():
  """ConvNeXt.layer_id == mmseg's get_layer_id_for_convnext / get_stage_id_for_convnext on
  the mmseg names of every parameter (stage 3 deep enough for block_id // 3 to vary), and the
  ConvNeXt config's optimizer groups follow mmseg's LearningRateDecayOptimizerConstructor."""
  ref.import_mmseg()
  from mmseg.engine.optimizers import layer_decay_optimizer_constructor as mm
  net = ConvNeXt(hidden_sizes=(8, 16, 24, 32), depths=(2, 2, 7, 2))
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  paths = [optim.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(shapes["params"])]
  assert len(paths) == len({mmseg_name(p) for p in paths})
  seen = set()
  for num_layers in (6, 12):
    for path in paths:
      name = mmseg_name(path)
      lw = net.layer_id(path, num_layers, "layer_wise")
      assert lw == mm.get_layer_id_for_convnext(name, num_layers), (path, name)
      sw = net.layer_id(path, num_layers, "stage_wise")
      # mmseg passes its num_layers + 2 to the stage-wise rule.
      assert sw == mm.get_stage_id_for_convnext(name, num_layers + 2), (path, name)
      seen.add(lw)
  assert {0, 1, 2, 3, 4, 5, 6, 7, 12, 13} <= seen

  config = load_config("upernet_convnext_t_ade")
  config.model.backbone = {"name": "convnext", "hidden_sizes": (8, 16, 24, 32),
                           "depths": (2, 2, 7, 2)}
  model = models.build_model(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  params = params["params"]
  groups = optim.param_groups(params, config.optim, model.backbone.layer_id)
  leaves = {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
  for path, (mult, decays) in groups.items():
    assert decays == (leaves[path].ndim > 1), path  # mmseg: no decay on 1-D params, biases
    if path.startswith("backbone/"):
      mm_id = mm.get_stage_id_for_convnext(mmseg_name(path[len("backbone/"):]), 6 + 2)
      assert mult == pytest.approx(0.9 ** (6 + 2 - mm_id - 1)), path
    else:
      assert mult == 1.0, path


def test_swin_weight_decay_groups_follow_mmseg():
  """mmseg's Swin recipe exempts names containing "norm" (the backbone's LayerNorms) and
  the relative position tables, but decays the heads' BatchNorms (`bn`)."""
  config = load_config("upernet_swin_t_ade")
  config.model.backbone = {"name": "swin", **TINY_SWIN}
  model = models.build_model(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  groups = optim.param_groups(params["params"], config.optim)
  assert groups["backbone/encoder/layers_0/blocks_1/attention/self/relative_position_bias_table"
                ] == (1.0, False)
  assert groups["backbone/hidden_states_norms/stage2/scale"] == (1.0, False)
  assert groups["backbone/encoder/layers_1/downsample/norm/bias"] == (1.0, False)
  assert groups["backbone/encoder/layers_1/downsample/reduction/kernel"] == (1.0, True)
  assert groups["decode_head/fpn_bottleneck/bn/scale"] == (1.0, True)
  assert groups["auxiliary_head_0/conv_seg/bias"] == (1.0, True)
