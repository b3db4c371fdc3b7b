"""Model shapes, exact parameter counts and the registries."""
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import models
from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES, HEADS, MODELS, NECKS
from tests.conftest import load_config

# HF transformers SegformerForSemanticSegmentation(num_labels=150).num_parameters() for
# B0..B5; test_convert re-derives them from HF whenever torch is importable.
HF_PARAMS_150 = {"b0": 3_752_694, "b1": 13_715_798, "b2": 27_461_974, "b3": 47_337_814,
                 "b4": 64_108_374, "b5": 84_708_694}


def segformer_config(variant, num_classes=150):
  c = load_config("segformer_b1_city")
  c.model.backbone.name = f"mit_{variant}"
  c.model.decode_head.channels = 256 if variant in ("b0", "b1") else 768
  c.data.num_classes = num_classes
  return c


def count_params(model, shape=(1, 64, 64, 3)):
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v["params"]))


@pytest.mark.parametrize("variant", sorted(HF_PARAMS_150))
def test_param_counts_equal_hf(variant):
  assert count_params(models.build_model(segformer_config(variant))) == HF_PARAMS_150[variant]


@pytest.mark.parametrize("hw", [(97, 131), (64, 64), (33, 200)])
def test_odd_input_sizes(test_config, hw):
  model = models.build_model(test_config)
  x = jnp.asarray(np.random.RandomState(0).randn(2, *hw, 3), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  logits, aux = model.apply(variables, x, train=False)
  # 7x7/4 patch embedding with padding 3: ceil(n / 4).
  assert logits.shape == (2, -(-hw[0] // 4), -(-hw[1] // 4), test_config.data.num_classes)
  assert aux == ()
  assert np.isfinite(np.asarray(logits)).all()


def test_full_cityscapes_frame_shape():
  model = models.build_model(segformer_config("b1", 19))
  out = jax.eval_shape(
      lambda: model.apply(model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))),
                          jnp.zeros((1, 1024, 2048, 3)))[0])
  assert out.shape == (1, 256, 512, 19)


@pytest.mark.parametrize("dilation,strides,multiplier", [
    (1, 1, 1), (3, 1, 1), (1, 2, 1), (2, 2, 1), (1, 1, 6), (1, 2, 3)])
def test_depthwise_shift_equals_xla(dilation, strides, multiplier):
  x = jax.random.normal(jax.random.key(1), (2, 9, 13, 6))  # odd sizes: strided edges
  kw = {"dilation": dilation, "strides": strides, "multiplier": multiplier}
  shift = layers.DepthwiseConv(3, impl="shift", **kw)
  v = shift.init(jax.random.key(2), x)
  v = jax.tree.map(lambda p: p + 0.1, v)  # non-zero bias too
  xla = layers.DepthwiseConv(3, impl="xla", **kw)
  # ... and both equal nn.Conv's grouped convolution (what ConvBNAct built before) on the same
  # parameters: output channel g*m + j reads input channel g.
  p = dilation  # 'same': dilation * (3 // 2)
  ref = nn.Conv(6 * multiplier, (3, 3), strides=strides, padding=((p, p), (p, p)),
                kernel_dilation=dilation, feature_group_count=6)
  out = shift.apply(v, x)
  assert out.shape == (2, (9 - 1) // strides + 1, (13 - 1) // strides + 1, 6 * multiplier)
  np.testing.assert_allclose(out, xla.apply(v, x), atol=1e-5)
  np.testing.assert_allclose(out, ref.apply(v, x), atol=1e-5)
  # ... and its gradient (the reason for "shift": XLA:CPU's grouped-conv backward is slow).
  grad = lambda m: jax.grad(lambda v: jnp.sum(m.apply(v, x) ** 2))(v)  # noqa: E731
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               grad(shift), grad(xla))


@pytest.mark.parametrize("kwargs", [
    {}, {"strides": 2}, {"strides": (2, 1), "use_bias": False}, {"padding": "VALID"},
    {"padding": ((0, 0), (0, 0))}, {"dtype": jnp.bfloat16},
    {"padding": ((1, 1), (1, 1))},  # a padded 1x1 conv: nn.Conv's path
    {"kernel_size": (3, 3), "strides": 2},  # not 1x1: nn.Conv's path
    {"feature_group_count": 2}])  # grouped: nn.Conv's path
def test_layers_conv_equals_nn_conv(kwargs):
  """layers.Conv computes 1x1 convolutions as a matmul (fast kernel gradient on CPU); its
  parameters, outputs and gradients equal nn.Conv's in every case."""
  kwargs = {"kernel_size": (1, 1), **kwargs}
  x = jax.random.normal(jax.random.key(1), (2, 9, 13, 6))
  ref, ours = nn.Conv(4, **kwargs), layers.Conv(4, **kwargs)
  v = ref.init(jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(2), x)) == jax.tree.map(jnp.shape, v)
  if "bias" in v["params"]:
    v = jax.tree.map(lambda p: p + 0.1, v)
  tol = 2e-2 if kwargs.get("dtype") == jnp.bfloat16 else 1e-5
  a, b = ref.apply(v, x), ours.apply(v, x)
  assert a.shape == b.shape and a.dtype == b.dtype
  np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol,
                             rtol=tol)
  def grad(m):
    return jax.grad(lambda v: jnp.sum(m.apply(v, x).astype(jnp.float32) ** 2))(v)
  jax.tree.map(lambda g, h: np.testing.assert_allclose(g, h, rtol=max(tol, 1e-4), atol=tol * 10),
               grad(ref), grad(ours))


def test_train_mode_uses_dropout_and_updates_batch_stats(test_config):
  model = models.build_model(test_config)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  v = model.init(jax.random.key(0), x, train=False)
  (a, _), upd = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)},
                            mutable=["batch_stats"])
  (b, _), _ = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)},
                          mutable=["batch_stats"])
  assert not np.allclose(a, b)  # stochastic depth + dropout differ by rng
  changed = jax.tree.map(lambda p, q: not np.allclose(p, q), v["batch_stats"], upd["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_bfloat16_compute(test_config):
  test_config.model.dtype = "bfloat16"
  model = models.build_model(test_config)
  x = jnp.zeros((1, 32, 32, 3))
  v = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  assert model.apply(v, x)[0].dtype == jnp.bfloat16


def test_aux_head_path(test_config):
  test_config.model.auxiliary_head = ({"name": "fcn_head", "in_index": 2, "channels": 8,
                                       "loss_weight": 0.4},)
  model = models.build_model(test_config)
  assert model.aux_loss_weights == (0.4,)
  x = jnp.zeros((1, 64, 64, 3))
  logits, aux = model.apply(model.init(jax.random.key(0), x), x)
  assert len(aux) == 1 and aux[0].shape == (1, 4, 4, test_config.data.num_classes)
  del test_config.model.auxiliary_head[0]["loss_weight"]
  with pytest.raises(ConfigError, match=r"model.auxiliary_head\[0\].loss_weight is missing"):
    models.build_model(test_config)


def test_cascade_feeds_each_stage_and_supervises_the_earlier_ones(test_config):
  """OCRNet's shape: decode_head = [fcn_head (loss 0.4), a head reading the first's logits]."""
  from configs import common
  test_config.model = common.encoder_decoder(
      backbone=test_config.model.backbone.to_dict(),
      decode_head=({"name": "fcn_head", "in_index": 0, "channels": 8, "loss_weight": 0.4},
                   {"name": "ocr_head", "in_index": 0, "channels": 8, "ocr_channels": 8}))
  model = models.build_model(test_config)
  assert model.aux_loss_weights == (0.4,)
  x = jnp.zeros((1, 64, 64, 3))
  variables = model.init(jax.random.key(0), x)
  assert set(variables["params"]) == {"backbone", "decode_head_0", "decode_head_1"}
  logits, aux = model.apply(variables, x)
  assert len(aux) == 1 and aux[0].shape == logits.shape == (1, 16, 16, 5)


# Backbones that return other than four stage maps (strides 4..32): the real-time ones return
# the maps their heads read (Fast-SCNN: 1/8, 1/32, fused 1/8; ICNet: 1/8, 1/16, 1/32; CGNet:
# 1/2, 1/4, 1/8; BiSeNet V1: fused 1/8 + two context maps; V2: aggregated 1/8 + four stages;
# STDCNet: stages 3-5, the input of STDC's context path; ERFNet, a whole encoder-decoder: its
# 1/2-resolution output; PIDNet: P, output, D, all 1/8; DDRNet: the stage-3 spatial branch and
# the output, both 1/8).
NUM_OUTPUTS = {"fast_scnn": 3, "icnet": 3, "cgnet": 3, "bisenetv1": 3, "bisenetv2": 5,
               "stdcnet": 3, "erfnet": 1, "pidnet": 3, "ddrnet": 2}
# Necks that fuse three maps (ICNeck: ICNet's three branches).
THREE_MAP_NECKS = {"icneck"}
# Heads whose outputs are not the classes: STDC's detail head predicts edge / no edge.
HEAD_OUTPUTS = {"stdc_head": 2}


def test_every_registered_part_builds(test_config):
  """Walks the registries completely so no registered name rots."""
  tiny_mit = dict(test_config.model.backbone)
  x = jnp.zeros((1, 64, 64, 3))
  for name in BACKBONES.names():
    cfg = {"name": name} if name != "mit" else tiny_mit
    backbone = BACKBONES.build(cfg, "model.backbone")
    feats = jax.eval_shape(lambda b=backbone: b.init_with_output(jax.random.key(0), x)[0])
    assert len(feats) == NUM_OUTPUTS.get(name, 4), name
  feats = [jnp.zeros((1, 64 // s, 64 // s, c)) for s, c in ((4, 8), (8, 16), (16, 24), (32, 32))]
  prev = jnp.zeros((1, 16, 16, 3))  # the logits of a cascade's earlier stage
  for name in HEADS.names():
    head = HEADS.build({"name": name}, "model.decode_head", num_classes=3)
    args = (feats, prev) if len(inspect.signature(head.__call__).parameters) > 2 else (feats,)
    out = jax.eval_shape(lambda h=head, a=args: h.init_with_output(jax.random.key(0), *a)[0])
    out = out[0] if isinstance(out, tuple) else out  # (logits, extra outputs)
    assert out.shape[-1] == HEAD_OUTPUTS.get(name, 3), name
  for name in NECKS.names():
    neck = NECKS.build({"name": name}, "model.neck")
    maps = feats[:3] if name in THREE_MAP_NECKS else feats
    out = jax.eval_shape(lambda n=neck, m=maps: n.init_with_output(jax.random.key(0), m)[0])
    assert len(out) == len(maps), name
  for name in MODELS.names():
    test_config.model.name = name
    assert models.build_model(test_config) is not None


def test_erfnet_mismatched_lists_are_config_errors():
  backbone = {"name": "erfnet", "enc_stage_non_bottlenecks": (5, 6)}  # 6 % 4 dilations
  with pytest.raises(ConfigError, match=r"erfnet.*multiple of len\(enc_non_bottleneck"):
    BACKBONES.build(backbone, "model.backbone")
  with pytest.raises(ConfigError, match=r"\(erfnet\): channel and stage lists do not match"):
    BACKBONES.build({"name": "erfnet", "dec_upsample_channels": (64,)}, "model.backbone")


@pytest.mark.parametrize("output_stride,sizes", [(8, (16, 8, 8, 8)), (16, (16, 8, 4, 4)),
                                                  (32, (16, 8, 4, 2))])
def test_dilated_resnet_output_stride(output_stride, sizes):
  from configs import common
  cfg = common.dilated_resnet(50, output_stride, stem_channels=8, base_channels=4)
  backbone = BACKBONES.build(cfg, "model.backbone")
  x = jnp.zeros((1, 64, 64, 3))
  feats = jax.eval_shape(lambda: backbone.init_with_output(jax.random.key(0), x)[0])
  assert [f.shape[1] for f in feats] == list(sizes)
  assert [f.shape[-1] for f in feats] == [16, 32, 64, 128]  # bottleneck: 4x base, doubling


def test_unknown_names_and_arguments_are_config_errors(test_config):
  test_config.model.backbone = {"name": "mit_b9"}
  with pytest.raises(ConfigError, match="unknown backbone 'mit_b9'; known: .*mit_b0"):
    models.build_model(test_config)
  test_config.model.backbone = {"name": "mit_b0", "dept": 3}
  with pytest.raises(ConfigError, match=r"model.backbone: .*dept"):
    models.build_model(test_config)
  test_config.model.backbone = {"name": "mit_b0"}
  test_config.model.dtype = "float16"
  with pytest.raises(ConfigError, match="model.dtype"):
    models.build_model(test_config)


def test_attention_equals_jax_dot_product_attention_with_bias_and_gradient():
  """layers.dot_product_attention (einsum on CPU) is jax.nn.dot_product_attention's maths."""
  r = np.random.RandomState(1)
  q, k, v = (jnp.asarray(r.randn(2, 37, 3, 8), jnp.float32) for _ in range(3))
  bias = jnp.asarray(r.randn(1, 3, 37, 37), jnp.float32)
  ours, ref = (lambda *a: layers.dot_product_attention(*a)), (
      lambda q, k, v, b: jax.nn.dot_product_attention(q, k, v, bias=b))
  np.testing.assert_allclose(ours(q, k, v, bias), ref(q, k, v, bias), atol=1e-5)
  grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2))(q, k, v, bias)
           for f in (ours, ref)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), *grads)
  bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  assert ours(*bf, None).dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(ours(*bf, None)), np.float32(ref(*bf, None)), atol=2e-2)
