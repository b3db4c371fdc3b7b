"""PVT v1, PVT v2 and PoolFormer (and Semantic FPN on them) against HF transformers.

Each reference is a tiny random HF model with *every* tensor re-drawn (weights at unit gain,
norm scales and biases, position embeddings, cls token, layer scales away from their identity
inits), saved with save_pretrained and converted by `--format=hf_backbone` into a tiny segjax
config; our four stage maps must equal HF's hidden states at odd input sizes, where the
patch embeddings floor or pad, the spatial reductions drop rows, PVT's position embeddings
are interpolated and PoolFormer's pooling meets the border. Full-size models are only counted
(torch's "meta" device, jax.eval_shape).
"""
import unittest.mock

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
from segjax.convert import hf_poolformer, hf_pvt, torch_layout  # noqa: E402
from segjax.errors import CheckpointError  # noqa: E402
from segjax.models.registry import BACKBONES  # noqa: E402
from tests.conftest import load_config  # noqa: E402

F = torch.nn.functional
SIZE = (67, 93)
TINY = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 2, 1, 1])


def randomise(model, seed=0):
  """Every tensor redrawn: matrices/kernels ~ N(0, 1/fan_in), norm scales and layer scales in
  [0.5, 1.5], biases in [-0.5, 0.5], position embeddings and cls token ~ N(0, 0.25)."""
  rng = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(("position_embeddings", "cls_token")):
        p.copy_(torch.randn(p.shape, generator=rng) * 0.5)
      elif p.ndim > 1:
        p.copy_(torch.randn(p.shape, generator=rng) / np.sqrt(np.prod(p.shape[1:])))
      elif name.endswith(("weight", "layer_scale_1", "layer_scale_2")):
        p.copy_(torch.rand(p.shape, generator=rng) + 0.5)
      else:
        p.copy_(torch.rand(p.shape, generator=rng) - 0.5)
  return model.eval()


def assert_close(ours, expected):
  ours = np.asarray(ours)
  assert ours.shape == expected.shape, (ours.shape, expected.shape)
  scale = np.max(np.abs(expected))
  assert scale > 0.1  # a real signal, not a dead network
  err = np.max(np.abs(ours - expected))
  assert err <= 1e-4 * scale, err / scale


def nchw_to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def convert(tmp_path, hf, overrides, recipe):
  """save_pretrained -> --format=hf_backbone into `recipe` with the tiny backbone; returns
  (our backbone module, its converted params)."""
  hf.save_pretrained(tmp_path / "hf")
  config = load_config(recipe)
  config.model.backbone = {**overrides, "drop_path_rate": 0.0}
  config.data.crop_size = (64, 64)
  _, flat = convert_main.convert(str(tmp_path / "hf"), str(tmp_path / "jax"), config,
                                 fmt="hf_backbone")
  assert all(k.startswith("params/backbone/") for k in flat)
  backbone = BACKBONES.build(config.model.backbone, "model.backbone")
  return backbone, torch_layout.nest(flat)["params"]["backbone"]


def official_pos_embed(self, embeddings, height, width):
  """The PVT authors' `_get_pos_embed`: the learnt grid (square, from the pretraining size)
  resized bilinearly (align_corners=False) to the token grid. HF's own version reshapes the
  embedding to the *new* grid first, which fails at any other input size."""
  side = int(round(embeddings.shape[1] ** 0.5))
  grid = embeddings.reshape(1, side, side, -1).permute(0, 3, 1, 2)
  grid = F.interpolate(grid, size=(height, width), mode="bilinear")
  return grid.reshape(1, -1, height * width).permute(0, 2, 1)


def test_pvt_stages_equal_hf(tmp_path):
  """PvtModel (image_size 64) at 64x64 as HF runs it (no interpolation), and with the
  authors' position-embedding resize at 67x93 (learnt grids 16/8/4/2 -> 16x23, 8x11, 4x5,
  2x2: upsampling) and 45x61 (-> 11x15, 5x7, 2x3, 1x1: downsampling). Stages 1-3 are the
  blocks' outputs, stage 4 the final LayerNorm's without the cls token."""
  torch.manual_seed(0)
  hf = randomise(transformers.PvtModel(transformers.PvtConfig(
      image_size=64, num_attention_heads=[1, 2, 3, 4], mlp_ratios=[2, 2, 4, 4], **TINY)))
  overrides = hf_pvt.model_overrides(hf.config.to_dict())
  assert overrides["image_size"] == 64 and overrides["sr_ratios"] == (8, 4, 2, 1)
  backbone, params = convert(tmp_path, hf, overrides, "fpn_pvt_t_ade")
  last = np.cumsum(TINY["depths"]) - 1
  for hw in ((64, 64), SIZE, (45, 61)):
    x = np.random.RandomState(0).randn(1, 3, *hw).astype(np.float32)
    with torch.no_grad(), unittest.mock.patch.object(
        transformers.models.pvt.modeling_pvt.PvtPatchEmbeddings, "interpolate_pos_encoding",
        official_pos_embed if hw != (64, 64) else
        transformers.models.pvt.modeling_pvt.PvtPatchEmbeddings.interpolate_pos_encoding):
      out = hf(torch.from_numpy(x), output_hidden_states=True)
    ours = jax.jit(backbone.apply)({"params": params}, x.transpose(0, 2, 3, 1))
    assert len(ours) == 4
    expected = [out.hidden_states[i].numpy() for i in last[:3]]
    expected.append(out.last_hidden_state[:, 1:].numpy())
    for o, e in zip(ours, expected):
      assert_close(o, e.reshape(o.shape))
    if hw == SIZE:
      assert [o.shape[1:3] for o in ours] == [(16, 23), (8, 11), (4, 5), (2, 2)]


@pytest.mark.parametrize("linear", [False, True])
def test_pvt_v2_stages_equal_hf(tmp_path, linear):
  """PvtV2Model's four hidden states at 67x93 (overlapping embeddings: 17x24, 9x12, 5x6, 3x3;
  reductions 8/4/2 floor to 2x3, 2x3, 2x3), with SRA and with linear SRA (7x7 adaptive pool,
  which also upsamples the 5x6 and 3x3 maps, and the FFN's ReLU)."""
  torch.manual_seed(0)
  hf = randomise(transformers.PvtV2Model(transformers.PvtV2Config(
      num_attention_heads=[1, 2, 3, 4], mlp_ratios=[2, 2, 4, 4], linear_attention=linear,
      **TINY)))
  overrides = hf_pvt.model_overrides_v2(hf.config.to_dict())
  assert overrides["linear_attention"] is linear
  backbone, params = convert(tmp_path, hf, overrides, "fpn_pvtv2_b0_ade")
  if not linear:  # MiT's block names, under HF's stage names
    assert params["encoder"]["layers_1"]["blocks_1"]["attn"]["sr"]["kernel"].shape == (4, 4, 16,
                                                                                        16)
  x = np.random.RandomState(0).randn(1, 3, *SIZE).astype(np.float32)
  with torch.no_grad():
    expected = [nchw_to_nhwc(h) for h in hf(torch.from_numpy(x),
                                            output_hidden_states=True).hidden_states]
  ours = jax.jit(backbone.apply)({"params": params}, x.transpose(0, 2, 3, 1))
  assert [o.shape[1:3] for o in ours] == [(17, 24), (9, 12), (5, 6), (3, 3)]
  assert len(expected) == 4
  for o, e in zip(ours, expected):
    assert_close(o, e)


def test_poolformer_stages_equal_hf(tmp_path):
  """PoolFormerForImageClassification at 67x93 (17x23, 9x12, 5x6, 3x3): the raw stage outputs
  (out_norms=False) equal HF's hidden states; with the out norms, the converter has put the
  classifier's final norm into norm6 and fresh GroupNorms into norm0/2/4 (mmseg's recipe)."""
  torch.manual_seed(0)
  hf = randomise(transformers.PoolFormerForImageClassification(transformers.PoolFormerConfig(
      num_labels=3, **TINY)))
  overrides = hf_poolformer.model_overrides(hf.config.to_dict())
  _, params = convert(tmp_path, hf, overrides, "fpn_poolformer_s12_ade")
  assert np.all(params["norm0"]["scale"] == 1) and np.all(params["norm4"]["bias"] == 0)
  x = np.random.RandomState(0).randn(1, 3, *SIZE).astype(np.float32)
  with torch.no_grad():
    hidden = hf(torch.from_numpy(x), output_hidden_states=True).hidden_states
    normed = [F.group_norm(h, 1, eps=1e-5) for h in hidden[:3]] + [hf.norm(hidden[3])]
  apply = jax.jit(lambda p, x, out_norms: BACKBONES.build(
      {**overrides, "out_norms": out_norms}, "b").apply({"params": p}, x), static_argnums=2)
  nhwc = x.transpose(0, 2, 3, 1)
  assert len(hidden) == 4
  for out_norms, expected in ((False, hidden), (True, normed)):
    ours = apply(params, nhwc, out_norms)
    assert [o.shape[1:3] for o in ours] == [(17, 23), (9, 12), (5, 6), (3, 3)]
    for o, e in zip(ours, expected):
      assert_close(o, nchw_to_nhwc(e))


def test_hf_backbone_refuses_unknown_and_missing_tensors(tmp_path):
  torch.manual_seed(0)
  hf = transformers.PvtV2Model(transformers.PvtV2Config(num_attention_heads=[1, 2, 3, 4], **TINY))
  hf.save_pretrained(tmp_path / "hf")
  sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
  config = load_config("fpn_pvtv2_b0_ade")
  config.model.backbone = hf_pvt.model_overrides_v2(hf.config.to_dict())
  config.data.crop_size = (64, 64)
  for name, change, match in (
      ("unknown", {"encoder.layers.1.blocks.0.attention.extra.weight": np.zeros(3, np.float32)},
       "no segjax counterpart: encoder.layers.1.blocks.0.attention.extra.weight"),
      ("missing", "encoder.layers.2.blocks.0.mlp.dwconv.dwconv.bias",
       "missing, first 'params/backbone/encoder/layers_2/blocks_0/mlp/dwconv/bias'")):
    bad = tmp_path / name
    bad.mkdir()
    (bad / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    tensors = dict(sd)
    if isinstance(change, dict):
      tensors.update(change)
    else:
      del tensors[change]
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=match):
      convert_main.convert(str(bad), str(tmp_path / f"jax_{name}"), config, fmt="hf_backbone")
    assert not (tmp_path / f"jax_{name}").exists()


# ------------------------------------------------------------------ full-size counts

_W, _S, _M = [64, 128, 320, 512], [64, 128, 320, 512], [96, 192, 384, 768]
# segjax name -> (HF config class, the paper's / HF hub variant's arguments).
FULL = {
    "pvt_tiny": ("PvtConfig", dict(depths=[2, 2, 2, 2])),
    "pvt_small": ("PvtConfig", dict(depths=[3, 4, 6, 3])),
    "pvt_medium": ("PvtConfig", dict(depths=[3, 4, 18, 3])),
    "pvt_large": ("PvtConfig", dict(depths=[3, 8, 27, 3])),
    "pvt_v2_b0": ("PvtV2Config", dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2])),
    "pvt_v2_b1": ("PvtV2Config", dict(hidden_sizes=_W, depths=[2, 2, 2, 2])),
    "pvt_v2_b2": ("PvtV2Config", dict(hidden_sizes=_W, depths=[3, 4, 6, 3])),
    "pvt_v2_b2_linear": ("PvtV2Config", dict(hidden_sizes=_W, depths=[3, 4, 6, 3],
                                             linear_attention=True)),
    "pvt_v2_b3": ("PvtV2Config", dict(hidden_sizes=_W, depths=[3, 4, 18, 3])),
    "pvt_v2_b4": ("PvtV2Config", dict(hidden_sizes=_W, depths=[3, 8, 27, 3])),
    "pvt_v2_b5": ("PvtV2Config", dict(hidden_sizes=_W, depths=[3, 6, 40, 3],
                                      mlp_ratios=[4, 4, 4, 4])),
    "poolformer_s12": ("PoolFormerConfig", dict(hidden_sizes=_S, depths=[2, 2, 6, 2])),
    "poolformer_s24": ("PoolFormerConfig", dict(hidden_sizes=_S, depths=[4, 4, 12, 4])),
    "poolformer_s36": ("PoolFormerConfig", dict(hidden_sizes=_S, depths=[6, 6, 18, 6])),
    "poolformer_m36": ("PoolFormerConfig", dict(hidden_sizes=_M, depths=[6, 6, 18, 6])),
    "poolformer_m48": ("PoolFormerConfig", dict(hidden_sizes=_M, depths=[8, 8, 24, 8])),
}
# The figures both sides reach, classifier excluded (pinned so that neither can drift).
# PoolFormer's are without the four out norms (HF has none; they add 2 x sum(widths)).
KNOWN = {"pvt_tiny": 12_716_288, "pvt_small": 23_972_864, "pvt_medium": 43_695_104,
         "pvt_large": 60_856_320, "pvt_v2_b0": 3_409_760, "pvt_v2_b1": 13_496_000,
         "pvt_v2_b2": 24_849_856, "pvt_v2_b2_linear": 22_040_512, "pvt_v2_b3": 44_725_696,
         "pvt_v2_b4": 62_043_072, "pvt_v2_b5": 81_443_008, "poolformer_s12": 11_401_152,
         "poolformer_s24": 20_874_944, "poolformer_s36": 30_348_736,
         "poolformer_m36": 55_401_984, "poolformer_m48": 72_702_912}


def count(module):
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


def test_full_size_param_counts_equal_hf():
  """Every named variant against the HF base model of the same variant (PvtModel, PvtV2Model,
  PoolFormerModel: no classifier) built on the meta device."""
  models_cls = {"PvtConfig": transformers.PvtModel, "PvtV2Config": transformers.PvtV2Model,
                "PoolFormerConfig": transformers.PoolFormerModel}
  for name, (config_cls, kw) in FULL.items():
    with torch.device("meta"):
      hf = models_cls[config_cls](getattr(transformers, config_cls)(**kw))
    expected = sum(p.numel() for p in hf.parameters())
    if name.startswith("poolformer"):
      ours = count(BACKBONES.build({"name": name, "out_norms": False}, "b"))
      assert count(BACKBONES.build({"name": name}, "b")) == ours + 2 * sum(kw["hidden_sizes"])
    else:
      ours = count(BACKBONES.build({"name": name}, "b"))
    assert (name, ours) == (name, expected)
    assert ours == KNOWN[name], name


# ------------------------------------------------------------------ the Semantic FPN recipes

def test_semantic_fpn_recipes_optimizer_groups():
  """The PVT authors' recipe decays every parameter at one lr (no norm or head groups); mmseg's
  PoolFormer configs also freeze the stem patch embedding (frozen_stages=0)."""
  heads = {"num_heads": (1, 2, 3, 4)}
  for recipe, backbone in (("fpn_pvt_s_ade", {"name": "pvt", **TINY, **heads}),
                           ("fpn_pvtv2_b2_ade", {"name": "pvt_v2", **TINY, **heads}),
                           ("fpn_poolformer_s12_ade", {"name": "poolformer", **TINY})):
    config = load_config(recipe)
    assert (config.optim.lr, config.optim.weight_decay, config.train.batch_size,
            config.train.num_steps, config.optim.poly_power) == (2e-4, 1e-4, 32, 40_000, 0.9)
    config.model.backbone = backbone
    model = models.build_model(config)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    groups = optim.param_groups(params["params"], config.optim)
    stem = {p for p in groups if p.startswith("backbone/encoder/patch_embeddings_0/")}
    frozen = {p for p, (mult, _) in groups.items() if mult == 0}
    assert frozen == (stem if "poolformer" in recipe else set())
    assert stem or "pvtv2" in recipe
    assert all(decays and mult in (0.0, 1.0) for mult, decays in groups.values())
