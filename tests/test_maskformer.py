"""MaskFormer: HF parity (outputs and loss), scipy-equal matching, sharded training, sizes.

The HF models are random-initialised (no download) with every parameter and BatchNorm
statistic perturbed, so zero biases or unit norms hide nothing.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tests.conftest import load_config, require

torch = require("torch")
transformers = require("transformers")
scipy_optimize = require("scipy.optimize")

from segjax import models, optim, parallel, train  # noqa: E402
from segjax.convert import __main__ as convert_main  # noqa: E402
from segjax.convert import hf_maskformer, torch_layout  # noqa: E402
from segjax.errors import CheckpointError  # noqa: E402
from segjax.models import maskformer  # noqa: E402

NUM_LABELS, NUM_QUERIES, H, W = 6, 4, 67, 93  # fewer queries than classes: both matchings


def hf_maskformer_model(backbone_config, seed=0):
  """A tiny random HF MaskFormer (eval mode), every tensor perturbed."""
  decoder = transformers.DetrConfig(d_model=32, decoder_layers=3, decoder_attention_heads=4,
                                    decoder_ffn_dim=48, num_queries=NUM_QUERIES)
  cfg = transformers.MaskFormerConfig(backbone_config=backbone_config, decoder_config=decoder,
                                      fpn_feature_size=32, mask_feature_size=32,
                                      num_labels=NUM_LABELS)
  torch.manual_seed(seed)
  model = transformers.MaskFormerForInstanceSegmentation(cfg).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if not t.is_floating_point() or name.startswith("criterion."):
        continue
      if name.endswith("running_var"):
        t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
      elif name.endswith("running_mean"):
        t.copy_(0.2 * torch.randn(t.shape, generator=gen))
      else:
        t.add_(0.1 * torch.randn(t.shape, generator=gen))
  return model


def tiny_resnet_config():
  """Bottleneck blocks 3/4/6/3 (ResNet-50's, so every converted name is R50's), tiny widths."""
  return transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 64, 128],
                                   depths=[3, 4, 6, 3], layer_type="bottleneck",
                                   out_features=["stage1", "stage2", "stage3", "stage4"])


def tiny_swin_config():
  """Window 3 on odd maps: padded windows, and a shifted window as large as the 3x3 last map
  (which MaskFormerSwin, unlike SwinModel, does not shrink)."""
  return transformers.SwinConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                                 window_size=3,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])


def convert_tiny(backbone_config, tmp):
  """(HF model, segjax model, variables) of a tiny MaskFormer via --format=hf_maskformer."""
  hf = hf_maskformer_model(backbone_config)
  hf.save_pretrained(tmp / "hf")
  config, flat = convert_main.convert(str(tmp / "hf"), str(tmp / "jax"), fmt="hf_maskformer")
  assert config.data.num_classes == NUM_LABELS
  config.model.dropout = config.model.activation_dropout = 0.0
  tree = torch_layout.nest(flat)
  return hf, models.build_model(config), {"params": tree["params"],
                                          "batch_stats": tree.get("batch_stats", {})}


@pytest.fixture(scope="module")
def converted_resnet(tmp_path_factory):
  hf, model, variables = convert_tiny(tiny_resnet_config(), tmp_path_factory.mktemp("mf_r"))
  assert model.backbone.depth == 50 and not model.backbone.deep_stem
  return hf, model, variables


def hf_semantic(class_logits, mask_logits):
  """HF post_process_semantic_segmentation before its resize and argmax."""
  probs = class_logits.softmax(-1)[..., :-1]
  return torch.einsum("bqc,bqhw->bchw", probs, mask_logits.sigmoid())


def assert_close(ours, ref, rel=1e-4):
  ref = np.asarray(ref)
  scale = np.abs(ref).max()
  assert scale > 1e-2, scale  # not trivially small
  np.testing.assert_allclose(np.asarray(ours), ref, atol=rel * scale, rtol=0)


def check_outputs(hf, model, variables):
  x = np.random.RandomState(0).randn(2, 3, H, W).astype(np.float32)  # odd size
  with torch.no_grad():
    out = hf(pixel_values=torch.from_numpy(x))
  semantic, aux = jax.jit(model.apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert aux["class_queries_logits"].shape == (3, 2, NUM_QUERIES, NUM_LABELS + 1)
  assert_close(aux["class_queries_logits"][-1], out.class_queries_logits.numpy())
  assert_close(aux["masks_queries_logits"][-1],
               out.masks_queries_logits.numpy().transpose(0, 2, 3, 1))
  ref = hf_semantic(out.class_queries_logits, out.masks_queries_logits).numpy()
  assert semantic.shape == (2, 17, 24, NUM_LABELS)  # 1/4 of 67x93, as HF's masks
  assert_close(semantic, ref.transpose(0, 2, 3, 1))


def test_outputs_match_hf_resnet(converted_resnet):
  check_outputs(*converted_resnet)


def test_outputs_match_hf_swin(tmp_path):
  hf, model, variables = convert_tiny(tiny_swin_config(), tmp_path)
  assert model.backbone.window_size == 3 and model.backbone.embed_dim == 16
  check_outputs(hf, model, variables)


def make_labels(seed=0):
  """Two label maps: one with 5 classes (more segments than the 4 queries), one with 2 and
  ignored pixels."""
  rng = np.random.RandomState(seed)
  labels = np.zeros((2, H, W), np.int32)
  cuts = np.sort(rng.choice(np.arange(5, W - 5), 4, replace=False))
  for i, c in enumerate([0, 1, 3, 4, 5]):
    labels[0, :, ([0, *cuts][i]):] = c
  labels[0, :20] = np.roll(labels[0, :20], 11, axis=1)
  labels[1] = 2
  labels[1, 30:, 10:70] = 5
  labels[1, :9] = 255
  labels[1, 50:, :7] = 255
  return labels


def hf_targets(labels):
  """HF's mask_labels / class_labels of semantic label maps: one mask per present class."""
  masks, classes = [], []
  for lab in labels:
    present = [c for c in np.unique(lab) if c != 255]
    masks.append(torch.from_numpy(np.stack([lab == c for c in present]).astype(np.float32)))
    classes.append(torch.tensor(present, dtype=torch.int64))
  return masks, classes


def test_loss_matches_hf(converted_resnet):
  """Last layer: HF's own forward loss. Deep supervision: HF's criterion fed the normed
  output of every earlier decoder layer (the paper's auxiliary predictions)."""
  hf, model, variables = converted_resnet
  x = np.random.RandomState(1).randn(2, 3, H, W).astype(np.float32)
  labels = make_labels()
  mask_labels, class_labels = hf_targets(labels)
  assert len(class_labels[0]) == 5 > NUM_QUERIES
  layer_out = []
  hooks = [layer.register_forward_hook(lambda m, i, o: layer_out.append(o[0]))
           for layer in hf.model.transformer_module.decoder.layers]
  with torch.no_grad():
    out = hf(pixel_values=torch.from_numpy(x), mask_labels=mask_labels,
             class_labels=class_labels)
    aux_logits = []
    for h in layer_out[:-1]:
      h = hf.model.transformer_module.decoder.layernorm(h)
      masks = torch.einsum("bqc,bchw->bqhw", hf.mask_embedder(h),
                           out.pixel_decoder_last_hidden_state)
      aux_logits.append({"masks_queries_logits": masks,
                         "class_queries_logits": hf.class_predictor(h)})
    deep = hf.get_loss_dict(out.masks_queries_logits, out.class_queries_logits, mask_labels,
                            class_labels, aux_logits)
  for h in hooks:
    h.remove()
  deep_total = float(sum(deep.values()))

  semantic, aux = jax.jit(model.apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  last = jax.jit(functools.partial(maskformer.maskformer_loss, num_classes=NUM_LABELS,
                                   layers_supervised=1))(
      aux["class_queries_logits"], aux["masks_queries_logits"], jnp.asarray(labels))
  for key in ("loss_cross_entropy", "loss_mask", "loss_dice"):
    assert_close(last[key][0], float(deep[key]), rel=1e-4)
  ours, parts = jax.jit(model.training_loss)(semantic, aux, jnp.asarray(labels))
  assert abs(float(out.loss) - float(last["loss_cross_entropy"][0] + last["loss_mask"][0] +
                                     last["loss_dice"][0])) <= 1e-4 * float(out.loss)
  assert abs(float(ours) - deep_total) <= 1e-4 * deep_total, (float(ours), deep_total)
  assert float(parts["loss_aux"]) > 0.1 * deep_total  # the earlier layers really count

  # Under jit with the batch split over 8 devices: the batch repeated 4 times has the same
  # loss (global class-weighted mean, mask sums over the global segment count).
  mesh = parallel.make_mesh()
  shard = parallel.batch_sharded(mesh)
  tile = lambda a, axis: jnp.concatenate([a] * 4, axis=axis)  # noqa: E731
  loss_fn = jax.jit(lambda c, m, y: jax.tree.map(
      jnp.sum, maskformer.maskformer_loss(c, m, y, NUM_LABELS)),
      in_shardings=(NamedSharding(mesh, P(None, "data")),) * 2 + (shard,))
  sharded = loss_fn(tile(aux["class_queries_logits"], 1), tile(aux["masks_queries_logits"], 1),
                    tile(jnp.asarray(labels), 0))
  assert abs(float(sum(sharded.values())) - deep_total) <= 1e-4 * deep_total


def scipy_match(cost, present):
  idx = np.nonzero(present)[0]
  rows, cols = scipy_optimize.linear_sum_assignment(cost[:, idx].astype(np.float64))
  want = np.full(cost.shape[0], cost.shape[1])
  want[rows] = idx[cols]
  return want


def test_matching_equals_scipy_with_ties():
  """Exactly scipy's assignment (HF's matcher) on integer costs full of ties, constant
  matrices and continuous costs, with fewer, as many and more targets than queries."""
  rng = np.random.RandomState(0)
  q, k, n = 7, 10, 48
  costs = np.stack([rng.randint(0, 3, (q, k)) if i % 3 == 0 else
                    np.full((q, k), 2.0) if i % 3 == 1 else rng.rand(q, k)
                    for i in range(n)]).astype(np.float32)
  present = np.stack([rng.rand(k) < (i % 12) / 11 for i in range(n)])
  present[0] = False
  match = jax.jit(jax.vmap(maskformer.match_queries))
  got = np.asarray(match(costs, present))
  again = np.asarray(match(costs, present))
  np.testing.assert_array_equal(got, again)
  sizes = present.sum(1)
  assert sizes.min() == 0 and (sizes == q).any() and sizes.max() > q
  for c, p, g in zip(costs, present, got):
    np.testing.assert_array_equal(g, scipy_match(c, p))


def tiny_train_config():
  c = load_config("test")
  c.data.num_classes = NUM_LABELS
  c.data.crop_size = (32, 32)
  c.model = ml_collections.ConfigDict({
      "name": "maskformer", "dtype": "float32",
      "backbone": {"name": "resnet", "depth": 18, "deep_stem": False, "stem_channels": 8,
                   "base_channels": 8},
      "num_queries": 5, "hidden_size": 32, "decoder_layers": 2, "decoder_attention_heads": 2,
      "decoder_ffn_dim": 32, "fpn_feature_size": 32, "mask_feature_size": 16})
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0
  return c


def test_trains_sharded_over_8_devices():
  """3 jitted train steps (Hungarian matching included) on a batch split over 8 devices:
  finite loss that changes."""
  config = tiny_train_config()
  rng = np.random.RandomState(0)
  labels = np.repeat(np.repeat(rng.randint(0, NUM_LABELS, (8, 4, 4)), 8, 1), 8, 2)
  labels[:, :3] = 255
  batch = {"image": rng.randn(8, 32, 32, 3).astype(np.float32), "label": labels.astype(np.int32)}
  model = models.build_model(config)
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 8
  state, tx = train.init_state(model, config, mesh,
                               lambda p: optim.make_optimizer(config.optim, p, 10))
  step = train.jit_train_step(model, tx, config, mesh)
  losses = []
  for _ in range(3):
    state, metrics = step(state, parallel.global_batch(batch, mesh), jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and len(set(losses)) == 3, losses
  assert {"loss_cross_entropy", "loss_mask", "loss_dice", "loss_aux"} <= set(metrics)


def count_params(config):
  model = models.build_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def hf_count(backbone_config):
  with torch.device("meta"):
    model = transformers.MaskFormerForInstanceSegmentation(
        transformers.MaskFormerConfig(backbone_config=backbone_config, num_labels=150))
  return model, sum(p.numel() for p in model.parameters())


def test_full_size_parameter_count():
  """maskformer_r50_ade == HF MaskFormer with a ResNet-50 and 150 labels; maskformer_swin_t_ade
  == HF's with Swin-T minus MaskFormerSwinModel's final LayerNorm, which no output reads
  (mmseg's Swin has none either)."""
  _, ref = hf_count(transformers.ResNetConfig(
      out_features=["stage1", "stage2", "stage3", "stage4"]))
  assert count_params(load_config("maskformer_r50_ade")) == ref == 41_307_863
  hf, ref = hf_count(transformers.SwinConfig(
      embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
      out_features=["stage1", "stage2", "stage3", "stage4"]))
  unused = sum(p.numel() for p in hf.model.pixel_level_module.encoder.model.layernorm.parameters())
  assert unused == 2 * 768
  assert count_params(load_config("maskformer_swin_t_ade")) == ref - unused == 41_757_009


def test_unknown_tensors_and_backbones_are_refused():
  hf_cfg = {"model_type": "maskformer", "backbone_config": tiny_resnet_config().to_dict()}
  with pytest.raises(CheckpointError, match="class_predictor.extra"):
    hf_maskformer.convert_state_dict({"class_predictor.extra": np.zeros(3)}, hf_cfg, "x")
  bad = dict(hf_cfg, backbone_config={"model_type": "convnext"})
  with pytest.raises(CheckpointError, match="backbone model_type='convnext'"):
    hf_maskformer.convert_state_dict({}, bad, "x")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maskformer_r50_ade", "maskformer_swin_t_ade"])
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """The recipe from its config file, shrunk (tests/test_zoo_training.py): one train step,
  evaluation and a checkpoint through train.train_and_evaluate."""
  from tests.test_zoo_training import check_recipe_trains_one_step_and_evaluates
  check_recipe_trains_one_step_and_evaluates(name, tmp_path)
