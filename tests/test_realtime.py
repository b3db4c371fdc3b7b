"""The real-time models (Fast-SCNN, ICNet, CGNet, DDRNet, PIDNet) beyond their parity rows
(tests/test_mmseg_parity.py): the PyTorch behaviours they depend on that an inference check
cannot see (BatchNorm momentum in training) or sees only at one size (ceil-mode pooling,
scale-factor resizes, the ResNet run in two parts), the outputs mmseg computes only in
training (DDRNet's auxiliary classifier, PIDNet's P and boundary classifiers) and the losses
on them, PIDNet's M and L variants, and each recipe training one step from its own config
file at test widths.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses, models
from segjax.models import layers
from segjax.models.backbones import icnet, resnet
from tests import mmseg_reference as ref
from tests.conftest import check_one_step_run, load_config, one_step_run


def test_batch_norm_momentum_is_torchs():
  """bn_momentum=0.01 (Fast-SCNN's norm_cfg) moves the running mean as torch's
  BatchNorm2d(momentum=0.01) does, and the running variance by the same rule (with the
  biased batch variance, as every flax BatchNorm: torch's unbiased one differs by n / (n - 1),
  1 + 4e-6 for a batch of 32 crops of 512x1024 at 1/8)."""
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).randn(4, 5, 7, 3).astype(np.float32) * 2 + 1
  module = layers.ConvBNAct(3, 1, activation=None, bn_momentum=0.01)
  variables = module.init(jax.random.key(0), x, train=False)
  _, updated = module.apply(variables, x, train=True, mutable=["batch_stats"])
  kernel = np.asarray(variables["params"]["conv"]["kernel"])[0, 0]  # (in, out)
  y = torch.from_numpy((x @ kernel).transpose(0, 3, 1, 2).copy())
  bn = torch.nn.BatchNorm2d(3, momentum=0.01).train()
  with torch.no_grad():
    bn(y)
  stats = updated["batch_stats"]["bn"]
  np.testing.assert_allclose(stats["mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-7)
  biased = y.var(dim=(0, 2, 3), unbiased=False).numpy()
  np.testing.assert_allclose(stats["var"], 0.99 * 1.0 + 0.01 * biased, rtol=1e-5)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_stem_pool_equals_torch_max_pool(ceil_mode):
  torch = pytest.importorskip("torch")
  pool = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)
  for h, w in ((8, 9), (13, 16), (24, 33)):
    x = np.random.RandomState(h).randn(1, h, w, 2).astype(np.float32)
    expected = pool(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ours = np.asarray(resnet.stem_pool(jnp.asarray(x), ceil_mode))
    np.testing.assert_array_equal(ours, expected.transpose(0, 2, 3, 1))


def test_resize_by_half_equals_torch_scale_factor():
  torch = pytest.importorskip("torch")
  for h, w in ((97, 131), (48, 65), (10, 12)):
    x = np.random.RandomState(w).randn(1, h, w, 2).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), scale_factor=0.5, mode="bilinear",
        align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(icnet.resize_by_half(jnp.asarray(x))), expected,
                               atol=1e-6)


def test_resnet_in_two_parts_equals_one_call():
  """ICNet runs stem..layer2 and layer3..layer4 as two calls of one ResNet: same parameters,
  same maps as the whole network."""
  net = resnet.ResNet(depth=18, stem_channels=8, base_channels=4, strides=(1, 2, 1, 1),
                      dilations=(1, 1, 2, 4), contract_dilation=True, pool_ceil_mode=True)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 30, 41, 3), jnp.float32)
  variables = net.init(jax.random.key(0), x)
  whole = net.apply(variables, x)
  first = net.apply(variables, x, last_stage=2)
  second = net.apply(variables, first[-1], first_stage=3)
  assert len(first) == len(second) == 2
  for ours, expected in zip(first + second, whole):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))
  split_init = jax.eval_shape(lambda: net.init(jax.random.key(0), x, last_stage=2))
  assert set(split_init["params"]) == {f"stem_{i}" for i in (0, 1, 3, 4, 6, 7)} | {
      f"layer{s}_{b}" for s in (1, 2) for b in (0, 1)}


# Test widths per model (the parity rows' shrink, on the segjax side only); the recipe's
# optimizer, losses (Fast-SCNN's sigmoid cross-entropy, CGNet's, DDRNet's and PIDNet's class
# weights, cut to the test data's 5 classes), auxiliary heads and BatchNorm settings stay.
TINY = {
    "fast_scnn_city": {
        "backbone": {"downsample_dw_channels": (8, 8), "global_in_channels": 8,
                     "global_block_channels": (8, 8, 16), "global_out_channels": 16,
                     "fusion_out_channels": 16},
        "decode_head": {"channels": 16}, "auxiliary_head": {"channels": 8}},
    "icnet_r18_d8_city": {
        "backbone": {"backbone_cfg": {"name": "resnet", "depth": 18, "stem_channels": 8,
                                      "base_channels": 4},
                     "light_branch_middle_channels": 8, "psp_out_channels": 8,
                     "out_channels": (8, 8, 8)},
        "neck": {"out_channels": 8}, "decode_head": {"channels": 8},
        "auxiliary_head": {"channels": 8}},
    "cgnet_city": {
        "backbone": {"num_channels": (8, 16, 32), "num_blocks": (1, 2)},
        "decode_head": {"channels": 64}},
    "ddrnet_23_slim_city": {
        "backbone": {"channels": 4, "ppm_channels": 8}, "decode_head": {"channels": 8}},
    "pidnet_s_city": {
        "backbone": {"channels": 4, "ppm_channels": 8}, "decode_head": {"channels": 8}},
}


def _cut_class_weights(specs, num_classes: int):
  """A loss list with its class weights (tuples or a name such as "cityscapes") cut to the
  first `num_classes` classes."""
  def cut(spec):
    weight = spec["class_weight"]
    weight = losses.NAMED_CLASS_WEIGHTS.get(weight, weight) if isinstance(weight, str) else weight
    return {**spec, "class_weight": tuple(weight)[:num_classes]}
  return [cut(spec) if spec.get("class_weight") is not None else spec for spec in specs]


def tiny_run_config(name: str):
  """configs/<name>.py with TINY[name]'s widths and configs/test.py's data (5 classes), one
  train step, evaluation and a checkpoint at step 1 (test_zoo_training's run)."""
  config = load_config(name)
  test = load_config("test")
  model = config.model.to_dict()
  for part, update in TINY[name].items():
    for target in (model[part] if part == "auxiliary_head" else [model[part]]):
      for key, value in update.items():
        target[key] = {**target[key], **value} if isinstance(value, dict) else value
  for head in [model["decode_head"], *model.get("auxiliary_head", ())]:
    if "loss" in head:
      head["loss"] = _cut_class_weights(head["loss"], test.data.num_classes)
    if "extra_losses" in head:
      head["extra_losses"] = [_cut_class_weights(specs, test.data.num_classes)
                              for specs in head["extra_losses"]]
  return one_step_run(config, model, eval_mode="whole")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """One step of the recipe (its optimizer, losses, auxiliary heads, BatchNorm settings),
  evaluation, and the step-1 checkpoint restored into the model with finite parameters."""
  config = tiny_run_config(name)
  check_one_step_run(config, tmp_path)


# ------------------------------------------------------------------------------------------
# Training-time outputs and losses against mmseg's
# ------------------------------------------------------------------------------------------

def blob_labels(shape, num_classes, seed):
  """Piecewise-constant labels of 8x8 cells (real boundaries) with an ignored band."""
  rng = np.random.RandomState(seed)
  b, h, w = shape
  cells = rng.randint(0, num_classes, (b, -(-h // 8), -(-w // 8)))
  labels = np.kron(cells, np.ones((1, 8, 8), np.int64))[:, :h, :w].copy()
  labels[:, 20:26] = 255
  return labels


def train_mode_pair(tmp_path, row, batch: int = 2):
  """(mmseg model in training mode but with BatchNorm on its running statistics and dropout
  off, so the two sides are deterministic and comparable; the converted Segmenter;
  normalised NHWC images of the row's size)."""
  import torch
  from tests.test_mmseg_parity import _converted_pair
  model, seg, config, _, _ = _converted_pair(tmp_path, row)
  model.train()
  for module in model.modules():
    if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout,
                           torch.nn.Dropout2d)):
      module.eval()
  images = np.random.RandomState(1).randint(0, 256, (batch, *row.hw, 3)).astype(np.float32)
  mean, std = (np.asarray(v, np.float32) for v in (config.data.mean, config.data.std))
  return model, seg, (images - mean) / std


def mmseg_train_outputs(model, images):
  """mmseg's decode head in training mode: its outputs (NCHW tensors) for NHWC images."""
  import torch
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return model.decode_head.forward(model.extract_feat(x))


def data_samples(labels, edges=None):
  """mmseg SegDataSamples holding (B, H, W) labels (and PIDNet's edge maps)."""
  import torch
  from mmengine.structures import PixelData
  from mmseg.structures import SegDataSample
  samples = []
  for i, label in enumerate(labels):
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None]).long())
    if edges is not None:
      sample.gt_edge_map = PixelData(data=torch.from_numpy(edges[i][None]).long())
    samples.append(sample)
  return samples


def nhwc(t) -> np.ndarray:
  return t.numpy().transpose(0, 2, 3, 1)


def assert_close(ours, expected, rtol=1e-4):
  ours, expected = np.asarray(ours, np.float32), np.asarray(expected, np.float32)
  assert ours.shape == expected.shape, (ours.shape, expected.shape)
  scale = np.max(np.abs(expected))
  assert scale > 0.1
  assert np.max(np.abs(ours - expected)) <= rtol * scale


def test_ddrnet_auxiliary_output_and_losses_equal_mmseg(tmp_path):
  """DDRHead in training mode: the context (main) and spatial (auxiliary) logits, and the
  loss dict of its loss_by_feat (OhemCrossEntropy, Cityscapes class weights, the second at
  0.4) against segjax's training loss of the same outputs: loss_main and 0.4 * loss_aux0."""
  import torch
  from tests.test_mmseg_parity import ROWS
  row = next(r for r in ROWS if r.config == "ddrnet_23_slim_city")
  model, seg, images = train_mode_pair(tmp_path, row)
  context, spatial = mmseg_train_outputs(model, images)
  logits, aux = seg.model.apply(seg.variables, jnp.asarray(images), train=False)
  assert len(aux) == 1 and seg.model.aux_loss_weights == (0.4,)
  assert_close(logits, nhwc(context))
  assert_close(aux[0], nhwc(spatial))

  # The losses of the outputs scaled down to a few units: random weights give main logits
  # above 100, whose softmax rounds many probabilities to exactly 1, and which of them stay
  # below OHEM's threshold (the largest probability, with this min_kept) then depends on
  # the last bit of torch's and XLA's exp.
  context, spatial = context / 40, spatial / 40
  labels = blob_labels((2, *row.hw), 19, seed=2)
  with torch.no_grad():
    theirs = model.decode_head.loss_by_feat((context, spatial), data_samples(labels))
  _, parts = losses.segmentation_loss(
      jnp.asarray(nhwc(context)), (jnp.asarray(nhwc(spatial)),), jnp.asarray(labels),
      seg.model.aux_loss_weights, seg.model.output_losses)
  np.testing.assert_allclose(float(parts["loss_main"]), float(theirs["loss_context"]),
                             rtol=1e-5)
  np.testing.assert_allclose(0.4 * float(parts["loss_aux0"]), float(theirs["loss_spatial"]),
                             rtol=1e-5)


def upsample_corners(t, size):
  """mmseg's PIDHead resize (align_corners=True) of an NCHW tensor, as NHWC numpy."""
  import torch
  return nhwc(torch.nn.functional.interpolate(t, size=size, mode="bilinear",
                                              align_corners=True))


def test_pidnet_outputs_and_losses_equal_mmseg(tmp_path):
  """PIDHead in training mode: the main, P and boundary logits (mmseg's at 1/8, resized to the
  image with corners aligned as its loss_by_feat does; segjax's come out of the head so), and
  its loss dict (class-weighted CE on P x 0.4, OHEM on the main logits, boundary BCE x 20
  against GenerateEdge(edge_width=4), OHEM at the boundary pixels) against segjax's training
  loss of the same outputs through the config's `loss` and `extra_losses`."""
  import torch
  from tests.test_mmseg_parity import ROWS
  row = next(r for r in ROWS if r.config == "pidnet_s_city")
  model, seg, images = train_mode_pair(tmp_path, row)  # imports mmseg (stubbing mmcv._ext)
  from mmseg.datasets.transforms import GenerateEdge
  p, i, d = mmseg_train_outputs(model, images)
  logits, aux = seg.model.apply(seg.variables, jnp.asarray(images), train=False)
  assert seg.model.aux_loss_weights == (0.4, 20.0, 1.0)
  assert_close(logits, upsample_corners(i, row.hw))
  assert_close(aux[0], upsample_corners(p, row.hw))
  assert_close(aux[1], upsample_corners(d, row.hw))
  np.testing.assert_array_equal(np.asarray(aux[2]),
                                np.concatenate([np.asarray(logits), np.asarray(aux[1])], -1))

  # Outputs brought to a few units, the boundary logit to about 20% above sigmoid 0.8:
  # random weights give main logits above 300, whose softmax rounds to exactly 1 (see the
  # DDRNet test), and boundary logits almost all negative.
  p, i, d = p / 10, i / 40, 1.5 * (d - d.mean()) / d.std()
  edge_share = float((torch.sigmoid(d) > 0.8).float().mean())
  assert 0.1 < edge_share < 0.4
  # No ignored pixels: mmseg's class-weighted CrossEntropyLoss (loss_sem_p) indexes its
  # weights with every label, 255 included (segjax's cross_entropy docstring).
  labels = blob_labels((2, *row.hw), 19, seed=3)
  labels[labels == 255] = 0
  edges = np.stack([GenerateEdge(edge_width=4).transform(
      {"img_shape": row.hw, "gt_seg_map": label.astype(np.uint8)})["gt_edge_map"]
      for label in labels])
  with torch.no_grad():
    theirs = model.decode_head.loss_by_feat((p, i, d), data_samples(labels, edges))
  i_up, p_up, d_up = (jnp.asarray(upsample_corners(t, row.hw)) for t in (i, p, d))
  _, parts = losses.segmentation_loss(
      i_up, (p_up, d_up, jnp.concatenate([i_up, d_up], -1)), jnp.asarray(labels),
      seg.model.aux_loss_weights, seg.model.output_losses)
  weights = dict(zip(("loss_aux0", "loss_aux1", "loss_aux2"), seg.model.aux_loss_weights))
  for ours, name in (("loss_main", "loss_sem_i"), ("loss_aux0", "loss_sem_p"),
                     ("loss_aux1", "loss_bd"), ("loss_aux2", "loss_sem_bd")):
    np.testing.assert_allclose(weights.get(ours, 1.0) * float(parts[ours]), float(theirs[name]),
                               rtol=1e-5, err_msg=ours)


def test_pidnet_m_and_l_equal_mmseg(tmp_path):
  """PIDNet-M (c = 64) and -L (3 stem blocks, 4 I-branch blocks: the full D branch, DAPPM and
  Bag instead of the light ones), from the PIDNet-S config: full-size parameter counts equal
  mmseg's, and PIDNet-L's logits at test width as the parity rows compare them."""
  from tests.test_mmseg_parity import Row, _assert_close, _converted_pair
  large = {"num_stem_blocks": 3, "num_branch_blocks": 4}
  for variant, backbone, head in (("m", {"channels": 64}, 128),
                                  ("l", {"channels": 64, "ppm_channels": 112, **large}, 256)):
    config = load_config("pidnet_s_city")
    config.model.backbone.update(backbone)
    config.model.decode_head.channels = head
    model = models.build_model(config)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))
    assert ours == ref.mmseg_param_count(
        f"pidnet/pidnet-{variant}_2xb6-120k_1024x1024-cityscapes.py")

  def shrink_large(mm_model, jax_model):
    ref.shrink_pidnet_model(mm_model, jax_model)
    for model in (mm_model, jax_model):
      model["backbone"].update(large)

  row = Row("pidnet_s_city", "pidnet/pidnet-l_2xb6-120k_1024x1024-cityscapes.py", shrink_large,
            (104, 136))
  mm_model, seg, _, images, normalised = _converted_pair(tmp_path, row)
  assert set(seg.variables["params"]["backbone"]["dfm"]) == {"conv"}  # Bag, not LightBag
  _assert_close(seg.logits(images, resize_to_input=True), ref.encode_decode(mm_model, normalised))
