"""ViT backbone, Segmenter head and the ViT converters against their references.

  * resize_bicubic against torch's F.interpolate(mode="bicubic", align_corners=False);
  * the backbone and Segmenter's mask head against mmseg 1.2.2 with *every* parameter
    random (LayerNorms and attention biases included, which the model-level rows of
    test_mmseg_parity.py leave at their init), on odd sizes that pad and interpolate;
  * layer_id against mmseg's get_layer_id_for_vit on every parameter;
  * HF ViTModel -> `--format=hf_backbone` against HF's features;
  * big_vision / AugReg `.npz` -> `--format=big_vision_vit` against HF's features, the npz
    written from the HF model by an independent mapping and checked by mmseg's own reader
    of that layout (tools/model_converters/vitjax2mmseg.py);
  * parameter counts of the linear Segmenter configs that mmseg has no file for.
Every reference is random-initialised (no downloads).
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax import models
from segjax.convert import __main__ as convert_main
from segjax.convert import hf_vit, mmseg, torch_layout
from segjax.errors import CheckpointError, ConfigError
from segjax.models import layers
from segjax.models.backbones.vit import VisionTransformer
from segjax.models.heads.segmenter_mask_head import SegmenterMaskTransformerHead
from segjax.tools import references
from tests import mmseg_reference as ref
from tests.conftest import load_config, require

torch = require("torch")
F = torch.nn.functional


def close(ours, expected):
  """max|ours - expected| <= 1e-4 max|expected|, on a reference that is not trivially small."""
  ours, expected = np.asarray(ours), np.asarray(expected)
  assert ours.shape == expected.shape, (ours.shape, expected.shape)
  scale = np.max(np.abs(expected))
  assert scale > 0.1, scale
  err = np.max(np.abs(ours - expected))
  assert err <= 1e-4 * scale, err / scale


def randomise(module, seed: int = 0, std: float = 0.5):
  """Every parameter of a torch module random (LayerNorm weights/biases and the attention
  biases, which start at 1 and 0, included)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("hw,out_hw", [((5, 7), (13, 4)), ((4, 4), (5, 6)), ((7, 3), (2, 9)),
                                       ((1, 3), (4, 1))])
def test_resize_bicubic_matches_torch(hw, out_hw):
  x = np.random.RandomState(0).randn(2, *hw, 3).astype(np.float32)
  expected = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out_hw,
                           mode="bicubic", align_corners=False).numpy().transpose(0, 2, 3, 1)
  close(layers.resize_bicubic(jnp.asarray(x), out_hw), expected)
  if hw != (1, 3):  # jax's own cubic (a = -0.5, renormalised borders) is measurably different
    jax_cubic = jax.image.resize(jnp.asarray(x), (2, *out_hw, 3), "cubic", antialias=False)
    assert np.max(np.abs(np.asarray(jax_cubic) - expected)) > 1e-2


def mmseg_vit(**kwargs):
  ref.import_mmseg()
  from mmseg.models.backbones import VisionTransformer as MMViT
  torch.manual_seed(0)
  model = MMViT(norm_cfg=dict(type="LN", eps=1e-6), **kwargs)
  model.eval()
  randomise(model)
  return model


def converted(module, prefix: str):
  """segjax params of a torch module whose state dict sits under `prefix` in an mmseg model,
  through --format=mmseg's conversion."""
  sd = {f"{prefix}.{k}": v.numpy() for k, v in module.state_dict().items()}
  return torch_layout.nest(mmseg.convert_mmseg(sd, "test"))["params"][prefix]


# (mmseg VisionTransformer arguments): bicubic + cls token + final norm + corner padding;
# bilinear (SETR) without cls token, "same" padding, patch 8, several outputs.
BACKBONES = {
    "bicubic_cls_finalnorm": dict(img_size=(64, 48), patch_size=16, embed_dims=32, num_layers=3,
                                  num_heads=2, out_indices=(0, 2), with_cls_token=True,
                                  final_norm=True, interpolate_mode="bicubic"),
    "bilinear_nocls_same_p8": dict(img_size=(32, 40), patch_size=8, embed_dims=32, num_layers=3,
                                   num_heads=4, out_indices=(1, 2), with_cls_token=False,
                                   final_norm=False, interpolate_mode="bilinear",
                                   patch_pad="same", patch_bias=True),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_matches_mmseg_all_params_random(name):
  kw = BACKBONES[name]
  model = mmseg_vit(**kw)
  x = np.random.RandomState(0).randn(1, 67, 93, 3).astype(np.float32)
  with torch.no_grad():
    expected = [o.numpy().transpose(0, 2, 3, 1)
                for o in model(torch.from_numpy(x.transpose(0, 3, 1, 2)))]
  ours = VisionTransformer(**kw).apply({"params": converted(model, "backbone")},
                                       jnp.asarray(x))
  assert len(ours) == len(expected) == 2
  for a, b in zip(ours, expected):
    close(a, b)


def test_segmenter_head_matches_mmseg_all_params_random():
  ref.import_mmseg()
  from mmseg.models.decode_heads import SegmenterMaskTransformerHead as MMHead
  torch.manual_seed(0)
  head = MMHead(in_channels=24, channels=24, num_classes=7, num_layers=2, num_heads=2,
                embed_dims=16, dropout_ratio=0.0)
  head.eval()
  randomise(head)
  x = np.random.RandomState(1).randn(1, 5, 6, 24).astype(np.float32)
  with torch.no_grad():
    expected = head([torch.from_numpy(x.transpose(0, 3, 1, 2))]).numpy().transpose(0, 2, 3, 1)
  ours = SegmenterMaskTransformerHead(7, num_layers=2, num_heads=2, embed_dims=16).apply(
      {"params": converted(head, "decode_head")}, [jnp.asarray(x)])
  close(ours, expected)


def test_layer_id_matches_mmseg():
  from mmseg.engine.optimizers.layer_decay_optimizer_constructor import get_layer_id_for_vit
  model = mmseg_vit(img_size=32, patch_size=16, embed_dims=16, num_layers=3, num_heads=2,
                    final_norm=True, patch_bias=True)
  ours = VisionTransformer(img_size=32, embed_dims=16, num_layers=3, num_heads=2,
                           final_norm=True, patch_bias=True)
  num_layers = 3  # optim.layer_decay_num_layers; mmseg's constructor passes it + 2
  seen = set()
  for name, p in model.named_parameters():
    (path,) = mmseg.convert_mmseg({f"backbone.{name}": p.detach().numpy()}, "test")
    path = path[len("params/backbone/"):]
    seen.add(ours.layer_id(path, num_layers, "layer_wise"))
    assert (ours.layer_id(path, num_layers, "layer_wise")
            == get_layer_id_for_vit(f"backbone.{name}", num_layers + 2)), name
  assert seen == {0, 1, 2, 3, 4}  # embeddings, the 3 layers, the final norm (unscaled)
  with pytest.raises(ConfigError, match="layer_decay_type='stage_wise'"):
    ours.layer_id("layers_0/ln1/scale", num_layers, "stage_wise")


def vit_config(backbone) -> ml_collections.ConfigDict:
  """A segjax config whose backbone is `backbone` (only the backbone matters here)."""
  config = load_config("segmenter_vits_mask_ade")
  config.model.backbone = backbone
  config.data.crop_size = (32, 32)
  return config


def apply_backbone(config, flat, images):
  params = torch_layout.nest(flat)["params"]["backbone"]
  backbone = models.BACKBONES.build(config.model.backbone.to_dict(), "model.backbone")
  return backbone.apply({"params": params}, jnp.asarray(images))


def hf_model(**kwargs):
  transformers = require("transformers")
  cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                               intermediate_size=128, image_size=32, patch_size=8, **kwargs)
  torch.manual_seed(0)
  model = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
  randomise(model, std=0.3)
  return model


def hf_tokens(model, images):
  """HF's last_hidden_state patch tokens of NHWC images, as an NHWC map."""
  p = model.config.patch_size
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                interpolate_pos_encoding=True).last_hidden_state.numpy()
  return out[:, 1:].reshape(images.shape[0], images.shape[1] // p, images.shape[2] // p, -1)


def test_hf_vit_matches_hf(tmp_path):
  model = hf_model()  # HF's defaults: LayerNorm eps 1e-12, exact GELU
  model.save_pretrained(tmp_path / "hf")
  backbone = hf_vit.model_overrides(model.config.to_dict())
  assert backbone["layer_norm_eps"] == 1e-12 and backbone["patch_pad"] == 0
  config = vit_config({**backbone, "out_indices": -1})
  _, flat = convert_main.convert(str(tmp_path / "hf"), str(tmp_path / "jax"), config,
                                 fmt="hf_backbone")
  # 45x61 is no multiple of the patch (HF drops the remainder: a 5x7 grid) and the 4x4
  # position embedding is interpolated (bicubic) to it.
  x = np.random.RandomState(0).randn(1, 45, 61, 3).astype(np.float32)
  (ours,) = apply_backbone(config, flat, x)
  close(ours, hf_tokens(model, x))


def augreg_npz(model) -> dict:
  """An HF ViTModel as a vision_transformer / AugReg .npz: pre-linen module numbering
  (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3), flax layouts
  (conv HWIO, Dense (in, out), attention kernels (D, heads, d) and (heads, d, D)), the cls
  entry first in Transformer/posembed_input, an ImageNet head. Written from
  vit_jax/models_vit.py's module tree, independently of segjax's reader."""
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  dim, heads = model.config.hidden_size, model.config.num_attention_heads
  proj = "embeddings.patch_embeddings.projection"
  w = {"embedding/kernel": sd[f"{proj}.weight"].transpose(2, 3, 1, 0),
       "embedding/bias": sd[f"{proj}.bias"],
       "cls": sd["embeddings.cls_token"],
       "Transformer/posembed_input/pos_embedding": sd["embeddings.position_embeddings"],
       "Transformer/encoder_norm/scale": sd["layernorm.weight"],
       "Transformer/encoder_norm/bias": sd["layernorm.bias"],
       "head/kernel": np.zeros((dim, 10), np.float32), "head/bias": np.zeros(10, np.float32)}
  for i in range(model.config.num_hidden_layers):
    b, h = f"Transformer/encoderblock_{i}/", f"encoder.layer.{i}."
    for ln, hf in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2", "layernorm_after")):
      w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = sd[f"{h}{hf}.weight"], sd[f"{h}{hf}.bias"]
    for n in ("query", "key", "value"):
      w[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = (
          sd[f"{h}attention.attention.{n}.weight"].T.reshape(dim, heads, -1))
      w[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = (
          sd[f"{h}attention.attention.{n}.bias"].reshape(heads, -1))
    w[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = (
        sd[f"{h}attention.output.dense.weight"].T.reshape(heads, -1, dim))
    w[f"{b}MultiHeadDotProductAttention_1/out/bias"] = sd[f"{h}attention.output.dense.bias"]
    for j, hf in ((0, "intermediate.dense"), (1, "output.dense")):
      w[f"{b}MlpBlock_3/Dense_{j}/kernel"] = sd[f"{h}{hf}.weight"].T
      w[f"{b}MlpBlock_3/Dense_{j}/bias"] = sd[f"{h}{hf}.bias"]
  return w


def big_vision_npz(augreg: dict, scan: bool) -> dict:
  """The same weights in big_vision's layout: flax's convert_pre_linen for the numbering and
  big_vision's fix_old_checkpoints (models/vit.py) for the position embedding (moved to the
  top level, its cls entry summed into `cls`), stacked per layer as pyloop_to_scan does."""
  from flax.training.checkpoints import convert_pre_linen
  tree = {}
  for key, value in augreg.items():
    node = tree
    *parents, leaf = key.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  tree = convert_pre_linen(tree)
  pe = tree["Transformer"].pop("posembed_input")["pos_embedding"]
  tree["pos_embedding"], tree["cls"] = pe[:, 1:], tree["cls"] + pe[:, :1]
  if scan:
    t = tree["Transformer"]
    blocks = [t.pop(k) for k in sorted([k for k in t if k.startswith("encoderblock_")],
                                       key=lambda k: int(k.split("_")[1]))]
    t["encoderblock"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  flat = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}/")
      else:
        flat[f"{prefix}{k}"] = np.asarray(v)
  walk(tree, "")
  assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in flat or scan
  return flat


def bv_config(**kwargs):
  return vit_config({"name": "vit", "img_size": 32, "patch_size": 8, "embed_dims": 32,
                     "num_layers": 3, "num_heads": 2, "patch_bias": True, "final_norm": True,
                     "out_indices": -1, "layer_norm_eps": 1e-6, **kwargs})


def test_augreg_npz_matches_hf_and_mmseg_reader(tmp_path):
  model = hf_model(layer_norm_eps=1e-6)  # exact GELU, as mmseg's ViT
  w = augreg_npz(model)
  x = np.random.RandomState(0).randn(1, 40, 56, 3).astype(np.float32)  # 5x7 grid vs 4x4
  expected = hf_tokens(model, x)
  # The npz is right: mmseg's own reader of this layout rebuilds the HF model's features.
  mm = ref.import_mmseg()
  path = os.path.join(mm.configs, "..", "tools", "model_converters", "vitjax2mmseg.py")
  spec = importlib.util.spec_from_file_location("vitjax2mmseg", path)
  vitjax2mmseg = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vitjax2mmseg)
  mm_vit = mmseg_vit(img_size=32, patch_size=8, embed_dims=32, num_layers=3, num_heads=2,
                     patch_bias=True, final_norm=True, out_indices=-1)
  mm_vit.load_state_dict(vitjax2mmseg.vit_jax_to_torch(
      {k: torch.from_numpy(v) for k, v in w.items()}, num_layer=3), strict=True)
  with torch.no_grad():
    (mm_out,) = mm_vit(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  close(mm_out.numpy().transpose(0, 2, 3, 1), expected)

  np.savez(tmp_path / "augreg.npz", **w)
  config = bv_config()
  _, flat = convert_main.convert(str(tmp_path / "augreg.npz"), str(tmp_path / "jax"), config,
                                 fmt="big_vision_vit")
  (ours,) = apply_backbone(config, flat, x)
  close(ours, expected)


@pytest.mark.parametrize("scan", [False, True], ids=["pyloop", "scan"])
def test_big_vision_npz_matches_hf(tmp_path, scan):
  model = hf_model(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")  # flax's nn.gelu
  np.savez(tmp_path / "bv.npz", **big_vision_npz(augreg_npz(model), scan))
  config = bv_config(approximate_gelu=True)
  _, flat = convert_main.convert(str(tmp_path / "bv.npz"), str(tmp_path / "jax"), config,
                                 fmt="big_vision_vit")
  x = np.random.RandomState(1).randn(1, 40, 56, 3).astype(np.float32)
  (ours,) = apply_backbone(config, flat, x)
  close(ours, hf_tokens(model, x))


def test_big_vision_npz_refuses_unknown_missing_and_wrong_heads(tmp_path):
  w = augreg_npz(hf_model())

  def refused(weights, match, **kwargs):
    np.savez(tmp_path / "x.npz", **weights)
    with pytest.raises(CheckpointError, match=match):
      convert_main.convert(str(tmp_path / "x.npz"), str(tmp_path / "jax"), bv_config(**kwargs),
                           fmt="big_vision_vit")
    assert not os.path.exists(tmp_path / "jax")

  refused({**w, "Transformer/extra/kernel": np.zeros(3, np.float32)},
          "not part of a big_vision/AugReg ViT: Transformer/extra/kernel")
  key = "Transformer/encoderblock_1/LayerNorm_2/scale"
  refused({k: v for k, v in w.items() if k != key}, f"missing: {key}")
  refused({k: v for k, v in w.items() if k != "cls"}, "missing: cls")
  refused(w, r"query/kernel has shape \(32, 2, 16\) .*num_heads is 4", num_heads=4)


def test_big_vision_npz_into_mmseg_style_config(tmp_path):
  """Into a ViT like mmseg's configs (no patch bias, no final norm, a 6x5 grid at its
  img_size): the bias and encoder_norm are dropped, as mmseg's loading drops them, and the
  4x4 position embedding is resized as mmseg's init_weights resizes it."""
  w = augreg_npz(hf_model())
  np.savez(tmp_path / "augreg.npz", **w)
  config = bv_config(img_size=(48, 40), patch_bias=False, final_norm=False)
  _, flat = convert_main.convert(str(tmp_path / "augreg.npz"), str(tmp_path / "jax"), config,
                                 fmt="big_vision_vit")
  assert "params/backbone/patch_embed/projection/bias" not in flat
  assert not any(k.startswith("params/backbone/ln1/") for k in flat)
  ref.import_mmseg()
  from mmseg.models.backbones import VisionTransformer as MMViT
  expected = MMViT.resize_pos_embed(torch.from_numpy(w["Transformer/posembed_input/"
                                                       "pos_embedding"]), (6, 5), (4, 4),
                                    "bicubic").numpy()
  close(flat["params/backbone/pos_embed"], expected)


def test_segmenter_model_logits_at_input_size_and_train_mode():
  """`segmenter` resizes the 1/16 masks to the input in the model (mmseg's encode_decode);
  train mode runs stochastic depth and dropout."""
  config = load_config("segmenter_vits_mask_ade")
  config.model.backbone.update(embed_dims=32, num_heads=2, num_layers=2, img_size=(32, 32),
                               drop_rate=0.1)
  config.model.decode_head.update(embed_dims=32, num_heads=2)
  model = models.build_model(config)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 45, 61, 3).astype(np.float32))
  variables = model.init(jax.random.key(0), x)
  logits, aux = model.apply(variables, x)
  assert logits.shape == (1, 45, 61, 150) and aux == ()
  trained, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert trained.shape == logits.shape and not np.allclose(trained, logits)


@pytest.mark.parametrize("variant", ["t", "b", "l"])
def test_linear_segmenter_param_counts_equal_mmseg(variant):
  """mmseg ships the linear decoder for ViT-S only (counted in test_mmseg_parity.py); the
  others are its mask config with that file's FCNHead, built on torch's meta device."""
  mm = ref.import_mmseg()
  cfg = references.mmseg_model_config(
      f"segmenter/segmenter_vit-{variant}_mask_8xb1-160k_ade20k-512x512.py")
  dims = {"t": 192, "b": 768, "l": 1024}[variant]
  cfg["decode_head"] = dict(type="FCNHead", in_channels=dims, channels=dims, num_convs=0,
                            dropout_ratio=0.0, concat_input=False, num_classes=150,
                            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False,
                                             loss_weight=1.0))
  linspace = torch.linspace
  torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
  try:
    with torch.device("meta"):
      expected = sum(p.numel() for p in mm.MODELS.build(cfg).parameters())
  finally:
    torch.linspace = linspace
  model = models.build_model(load_config(f"segmenter_vit{variant}_linear_ade"))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"])) == expected
