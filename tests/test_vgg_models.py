"""VGG-16 and its Caffe-era segmentation models: FCN-32s/16s/8s, DeepLab v1 LargeFOV, ParseNet
and the dilation context module (segjax/models/backbones/vgg.py, heads/fcn_skip_head.py,
largefov_head.py, parsenet_head.py, context_head.py; segjax/convert/torchvision_vgg.py).

Each model is compared with a PyTorch transcription of its reference network written here
(random weights, tiny widths), parameter counts with the reference layer shapes at full
size, the converter with a torch nn.Sequential laid out like torchvision's VGG, and every
config trains one step and evaluates through the trainer.
"""
import numpy as np
import pytest

import jax
import jax.numpy as jnp
import ml_collections

from segjax import models, optim
from segjax.convert import __main__ as convert_main
from segjax.convert import torch_layout, torchvision_vgg
from segjax.errors import CheckpointError, ConfigError
from segjax.models.heads import context_head, largefov_head
from segjax.models.registry import BACKBONES, MODELS
from tests import test_zoo_training
from tests.conftest import load_config, require

WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = (2, 2, 3, 3, 3)
TINY = (4, 4, 4, 8, 8)  # stage widths of the parity tests

CONFIGS = ["fcn32s_vgg16_voc", "fcn16s_vgg16_voc", "fcn8s_vgg16_voc",
           "deeplabv1_vgg16_largefov_voc", "parsenet_vgg16_voc", "context_vgg16_basic_voc",
           "context_vgg16_large_voc"]


# ---------------------------------------------------------------------------------------------
# Parameter counts, from the reference layer shapes (21 classes, Caffe convs with biases,
# Caffe Deconvolutions without: `bias_term: false`).

def conv(k, c_in, c_out, bias=True):
  return k * k * c_in * c_out + (c_out if bias else 0)


def deconv(k, c=21):
  return conv(k, c, c, bias=False)


_IN = (3,) + tuple(w for w, n in zip(WIDTHS, DEPTHS) for _ in range(n))[:-1]
_OUT = tuple(w for w, n in zip(WIDTHS, DEPTHS) for _ in range(n))
VGG16_CONVS = sum(conv(3, a, b) for a, b in zip(_IN, _OUT))  # conv1_1 .. conv5_3
VGG_FC6, VGG_FC7 = conv(7, 512, 4096), conv(1, 4096, 4096)
C = 21
# voc-fcn{32,16,8}s/net.py, layer by layer (fc6 7x7 over pool5; upscore* bias-free).
FCN32S = VGG16_CONVS + VGG_FC6 + VGG_FC7 + conv(1, 4096, C) + deconv(64)
FCN16S = (VGG16_CONVS + VGG_FC6 + VGG_FC7 + conv(1, 4096, C) + deconv(4)  # upscore2
          + conv(1, 512, C) + deconv(32))  # score_pool4, upscore16
FCN8S = (VGG16_CONVS + VGG_FC6 + VGG_FC7 + conv(1, 4096, C) + deconv(4)
         + conv(1, 512, C) + deconv(4)  # score_pool4, upscore_pool4
         + conv(1, 256, C) + deconv(16))  # score_pool3, upscore8
# DeepLab-LargeFOV: fc6 3x3x512x1024 (rate 12), fc7 1x1 1024, fc8 (pools have no weights).
LARGEFOV = VGG16_CONVS + conv(3, 512, 1024) + conv(1, 1024, 1024) + conv(1, 1024, C)
# ParseNet: LargeFOV's fc6 / fc7, two per-channel Normalize scales, a classifier on the concat.
PARSENET = VGG16_CONVS + conv(3, 512, 1024) + conv(1, 1024, 1024) + 2 * 1024 + conv(1, 2048, C)
# fyu/dilation network.py: the front end (fc6 7x7x512x4096 at dilation 4, fc7, final) and the
# context module: seven 3x3 layers and a 1x1, widths in units of C (Table 1 of the paper).
FRONT_END = VGG16_CONVS + VGG_FC6 + VGG_FC7 + conv(1, 4096, C)


def context_params(widths):
  chans = [C] + [m * C for m in widths] + [C]
  return sum(conv(3 if i < 7 else 1, chans[i], chans[i + 1]) for i in range(8))


CONTEXT_BASIC = FRONT_END + context_params((1,) * 7)
CONTEXT_LARGE = FRONT_END + context_params((2, 2, 4, 8, 16, 32, 32))


def count(model, size=(64, 64)) -> int:
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def test_vgg16_parameter_table_matches_torchvision_and_the_backbone():
  # torchvision's documented sizes: vgg16 138,357,544, vgg16_bn 138,365,992 parameters.
  assert VGG16_CONVS + VGG_FC6 + VGG_FC7 + conv(1, 4096, 1000) == 138_357_544
  assert count(BACKBONES.build({"name": "vgg16"}, "b")) == VGG16_CONVS == 14_714_688
  # vgg16_bn: + BN scale and shift per channel; segjax folds the conv biases (4,224) into the
  # BN statistics (a bias before a BN is redundant).
  biases, bn = sum(_OUT), 2 * sum(_OUT)
  assert count(BACKBONES.build({"name": "vgg16_bn"}, "b")) == VGG16_CONVS - biases + bn
  assert VGG16_CONVS + bn + VGG_FC6 + VGG_FC7 + conv(1, 4096, 1000) == 138_365_992


@pytest.mark.parametrize("name,expected", [
    ("fcn32s", FCN32S), ("fcn16s", FCN16S), ("fcn8s", FCN8S), ("deeplab_v1", LARGEFOV),
    ("parsenet", PARSENET), ("context_module", CONTEXT_LARGE)])
def test_paper_models_by_name_have_the_reference_parameter_counts(name, expected):
  """`{"name": <the issue's name>}` alone builds the paper's model with 21 classes."""
  assert count(MODELS.build({"name": name}, "model", num_classes=C)) == expected


def test_config_parameter_counts():
  counts = {n: count(models.build_model(load_config(n))) for n in CONFIGS}
  assert counts == {
      "fcn32s_vgg16_voc": FCN32S, "fcn16s_vgg16_voc": FCN16S, "fcn8s_vgg16_voc": FCN8S,
      "deeplabv1_vgg16_largefov_voc": LARGEFOV, "parsenet_vgg16_voc": PARSENET,
      "context_vgg16_basic_voc": CONTEXT_BASIC, "context_vgg16_large_voc": CONTEXT_LARGE}
  assert (FCN32S, FCN16S, FCN8S) == (136_152_917, 134_815_994, 134_489_759)
  assert round(LARGEFOV / 1e6, 1) == 20.5  # DeepLab v1, Table 2: "20.5M"
  assert context_params((1,) * 7) - 8 * C == 64 * C * C  # paper §3: the basic module's 64C^2


# ---------------------------------------------------------------------------------------------
# Parity with PyTorch transcriptions of the reference networks.

def random_params(model, x, seed: int):
  """Parameters for `model` on input `x` (from its abstract init: no initialiser compiles,
  which costs seconds per shape on a loaded CPU): every weight ~ N(0, 2 / fan_in), every
  bias ~ U(0, 0.1), scales ~ U(0.5, 2); no zero or bilinear initialisation left to hide a
  wrong wiring."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(x)))["params"]
  return randomize(shapes, seed)


def randomize(params, seed: int):
  """`params`' tree (arrays or shapes) filled as random_params says."""
  rng = np.random.RandomState(seed)

  def draw(path, x):
    name = path[-1].key
    if name == "bias":
      return jnp.asarray(rng.uniform(0.0, 0.1, x.shape), jnp.float32)
    if name == "scale":
      return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), jnp.float32)
    fan_in = int(np.prod(x.shape[:-1]))
    return jnp.asarray(rng.randn(*x.shape) * np.sqrt(2.0 / fan_in), jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, params)


class Torch:
  """The reference layers in PyTorch, reading segjax's (randomised) parameters."""

  def __init__(self, params):
    self.torch = require("torch")
    self.F = self.torch.nn.functional
    self.p = jax.tree.map(lambda a: np.array(a), params)

  def t(self, a):
    return self.torch.from_numpy(np.ascontiguousarray(a))

  def conv(self, h, layer, pad, dilation=1):
    return self.F.conv2d(h, self.t(layer["kernel"].transpose(3, 2, 0, 1)), self.t(layer["bias"]),
                         padding=pad, dilation=dilation)

  def deconv(self, h, layer, stride):  # Caffe Deconvolution = ConvTranspose2d, weight (in, out)
    return self.F.conv_transpose2d(h, self.t(layer["kernel"].transpose(2, 3, 0, 1)),
                                   stride=stride)

  def vgg(self, x, pools, dilations=(1,) * 5, conv1_pad=1):
    """VGG-16's stages with Caffe poolings (ceil mode); returns every stage's output."""
    h, outs = x, []
    for s, n in enumerate(DEPTHS):
      for j in range(n):
        layer = self.p["backbone"][f"conv{s + 1}_{j + 1}"]["conv"]
        pad = conv1_pad if (s, j) == (0, 0) else dilations[s]
        h = self.F.relu(self.conv(h, layer, pad, dilations[s]))
      if pools[s] is not None:
        k, st, pad = pools[s]
        h = self.F.max_pool2d(h, k, st, pad, ceil_mode=True)
      outs.append(h)
    return outs

  def fc67(self, x, pad, dilation=1):
    hd = self.p["decode_head"]
    h = self.F.relu(self.conv(x, hd["fc6"], pad, dilation))
    return self.F.relu(self.conv(h, hd["fc7"], 0))


def caffe_fcn(ref: Torch, x, upsample: int, skip_scales):
  """voc-fcn{32,16,8}s/net.py as Caffe runs it: conv1_1 padded by 100, ceil-mode 2x2 pools,
  fc6 unpadded, the Crop layers at train.prototxt's offsets (19; 5, 27; 5, 9, 31)."""
  hd = ref.p["decode_head"]
  _, _, pool3, pool4, pool5 = ref.vgg(x, [(2, 2, 0)] * 5, conv1_pad=100)
  score = ref.conv(ref.fc67(pool5, 0), hd["score_fr"], 0)
  h, w = x.shape[2:]
  crop = lambda a, o, hh, ww: a[:, :, o:o + hh, o:o + ww]  # noqa: E731
  if upsample == 32:
    return crop(ref.deconv(score, hd["upscore"], 32), 19, h, w)
  up = ref.deconv(score, hd["upscore2"], 2)
  fuse = up + crop(ref.conv(pool4 * skip_scales[0], hd["score_pool4"], 0), 5, *up.shape[2:])
  if upsample == 16:
    return crop(ref.deconv(fuse, hd["upscore16"], 16), 27, h, w)
  up = ref.deconv(fuse, hd["upscore_pool4"], 2)
  fuse = up + crop(ref.conv(pool3 * skip_scales[1], hd["score_pool3"], 0), 9, *up.shape[2:])
  return crop(ref.deconv(fuse, hd["upscore8"], 8), 31, h, w)


# How far an output pixel's inputs reach: the last upsampling's two cells (f = 8, 16 or 32),
# the upsampled skips' cells in between (16 and 32 px), fc6's 7 pool5 cells (6 * 32 / 2) and
# a pool5 cell's own 212-pixel field ((212 - 1) / 2). Beyond it from every border, neither
# network's padding is in view and the two compute the same function of the same pixels.
FCN_REACH = {32: 32 + 96 + 105.5, 16: 16 + 32 + 96 + 105.5, 8: 8 + 16 + 32 + 96 + 105.5}


@pytest.mark.parametrize("upsample", [32, 8])
def test_fcn_equals_the_pad100_and_crop_reference_away_from_the_border(upsample):
  """Alignment: same-padded segjax FCN (input_pad 3, crops at the grid) and the reference's
  pad-100-and-crop net agree pixel for pixel wherever no padding is in reach: any offset or
  phase error would shift every pixel. (FCN-16s is the same code with one skip fewer.)"""
  torch = require("torch")
  scales = (0.5, 0.25)  # not 1, to check where the skips are scaled
  model = MODELS.build({"name": f"fcn{upsample}s", "backbone": {"name": "vgg16", "widths": TINY},
                        "decode_head": {"channels": 8, "skip_scales": scales}}, "model",
                       num_classes=3)
  h, w = 592, 577
  x = np.random.RandomState(1).randn(1, h, w, 3).astype(np.float32)
  params = random_params(model, x[:, :32, :32], 2)
  ours = np.asarray(model.apply({"params": params}, x)[0])
  assert ours.shape == (1, h, w, 3)
  with torch.no_grad():
    theirs = caffe_fcn(Torch(params), torch.from_numpy(x.transpose(0, 3, 1, 2)), upsample,
                       scales).numpy().transpose(0, 2, 3, 1)
  assert theirs.shape == ours.shape
  m = int(np.ceil(FCN_REACH[upsample]))
  inner_ours, inner_theirs = ours[:, m:h - m, m:w - m], theirs[:, m:h - m, m:w - m]
  assert inner_theirs.shape[1:3] == (h - 2 * m, w - 2 * m) and inner_theirs.std() > 0
  np.testing.assert_allclose(inner_ours, inner_theirs, rtol=0,
                             atol=1e-4 * np.abs(inner_theirs).max())


def test_fcn_outputs_cover_any_input_size():
  for name in ("fcn32s", "fcn16s", "fcn8s"):
    model = MODELS.build({"name": name, "backbone": {"name": "vgg16", "widths": TINY},
                          "decode_head": {"channels": 8}}, "model", num_classes=3)
    for size in ((1, 1), (31, 33), (50, 17)):
      x = jnp.zeros((1, *size, 3))
      out = jax.eval_shape(lambda m=model, x=x: m.init_with_output(jax.random.key(0), x)[0][0])
      assert out.shape == (1, *size, 3), (name, size)


DEEPLAB_POOLS = largefov_head.DEEPLAB_V1_VGG16["pools"]


def deeplab_reference(ref: Torch, x, parsenet: bool):
  """DeepLab-LargeFOV's train.prototxt (3x3 ceil-mode pools, conv5 at rate 2, pool5a, fc6 at
  rate 12) and its Interp x8 (bilinear, corners aligned); with `parsenet`, fc7 and its global
  average through the Caffe Normalize layer (weiliu89/caffe fcn: x / sqrt(sum x^2 + 1e-10)
  times a per-channel scale), concatenated, then the classifier."""
  F, hd = ref.F, ref.p["decode_head"]
  pool5 = ref.vgg(x, DEEPLAB_POOLS, (1, 1, 1, 1, 2))[-1]
  if not parsenet:
    pool5 = F.avg_pool2d(pool5, 3, 1, 1, count_include_pad=True)  # pool5a
  fc7 = ref.fc67(pool5, 12, 12)
  if parsenet:
    norm = lambda a, s: a / (a.pow(2).sum(1, keepdim=True) + 1e-10).sqrt() * ref.t(  # noqa
        s["scale"])[None, :, None, None]
    pooled = norm(fc7.mean((2, 3), keepdim=True), hd["pool6_norm"])
    fc7 = ref.torch.cat([norm(fc7, hd["fc7_norm"]), pooled.expand_as(fc7)], 1)
  score = ref.conv(fc7, hd["score" if parsenet else "fc8"], 0)
  n_h, n_w = score.shape[2:]
  up = F.interpolate(score, size=(8 * (n_h - 1) + 1, 8 * (n_w - 1) + 1), mode="bilinear",
                     align_corners=True)
  return up[:, :, :x.shape[2], :x.shape[3]]


def context_reference(ref: Torch, x, num_classes: int):
  """fyu/dilation network.py's front end and context module (same-padded here, see
  context_head.py) and make_upsample: a fixed bilinear deconvolution, kernel 16, stride 8,
  pad 4, one group per class."""
  from segjax.models.heads import fcn_skip_head
  F, hd = ref.F, ref.p["decode_head"]
  conv5 = ref.vgg(x, context_head.FRONT_END_VGG16["pools"], (1, 1, 1, 1, 2))[-1]
  h = ref.conv(ref.fc67(conv5, 12, 4), hd["final"], 0)
  for i, name in enumerate(context_head.NAMES):
    d = context_head.DILATIONS[i] if i < 7 else 1
    h = ref.conv(h, hd["context"][name], d if i < 7 else 0, d)
    h = F.relu(h) if i < 7 else h
  kernel = np.repeat(fcn_skip_head.bilinear_kernel(16)[None, None], num_classes, 0)
  return F.conv_transpose2d(h, ref.t(kernel), stride=8, padding=4, groups=num_classes)


@pytest.mark.parametrize("name,size", [("deeplab_v1", (65, 81)), ("parsenet", (57, 73)),
                                       ("context_module", (48, 64))])
def test_stride8_models_equal_their_reference_transcription(name, size):
  """DeepLab v1 and ParseNet on 8k + 1 inputs (where the reference's Interp is exact) over the
  whole output; the context module (large) away from the 4-pixel border that its bilinear
  deconvolution fades to zero."""
  torch = require("torch")
  backbone = {"deeplab_v1": largefov_head.DEEPLAB_V1_VGG16,
              "parsenet": largefov_head.DEEPLAB_V1_VGG16,
              "context_module": context_head.FRONT_END_VGG16}[name]
  model = MODELS.build({"name": name, "backbone": {**backbone, "widths": TINY},
                        "decode_head": {"channels": 8}}, "model", num_classes=3)
  x = np.random.RandomState(3).randn(1, *size, 3).astype(np.float32)
  params = random_params(model, x, 4)
  ours = np.asarray(model.apply({"params": params}, x)[0])
  ref = Torch(params)
  with torch.no_grad():
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    theirs = (context_reference(ref, xt, 3) if name == "context_module" else
              deeplab_reference(ref, xt, name == "parsenet")).numpy().transpose(0, 2, 3, 1)
  assert theirs.shape == ours.shape == (1, *size, 3)
  if name == "context_module":
    ours, theirs = ours[:, 4:-4, 4:-4], theirs[:, 4:-4, 4:-4]
  assert theirs.std() > 0
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_context_module_identity_init_and_67_pixel_field(variant):
  """Paper §3: identity initialisation (no noise) makes the module max(x, 0) exactly; its
  receptive field is 67x67 (dilations 1, 1, 2, 4, 8, 16, 1 and a 1x1)."""
  module = context_head.ContextModule(num_classes=2, variant=variant, init_noise=0.0)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 76, 76, 2), jnp.float32)
  variables = module.init(jax.random.key(0), x)
  np.testing.assert_allclose(np.asarray(module.apply(variables, x)), np.maximum(x, 0),
                             rtol=1e-6, atol=1e-6)
  params = jax.tree.map(jnp.abs, random_params(module, x, 5))  # positive: no ReLU cuts a path
  grad = jax.grad(lambda a: module.apply({"params": params}, a)[0, 40, 40].sum())(
      jnp.abs(x) + 0.1)
  rows, cols = np.nonzero(np.abs(np.asarray(grad[0])).sum(-1))
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 73, 7, 73)  # 40 -+ 33


# ---------------------------------------------------------------------------------------------
# torchvision weights.

def torchvision_layout_vgg(torch, widths, bn: bool, fc: int):
  """torchvision.models.vgg16(_bn)'s module layout (features / classifier indices), widths
  shrunk: make_layers' Conv2d(3x3, pad 1) [BatchNorm2d] ReLU per conv, MaxPool2d(2, 2) per
  stage; classifier Linear(C * 7 * 7, fc) ReLU Dropout Linear(fc, fc) ReLU Dropout Linear."""
  nn = torch.nn
  layers, c_in = [], 3
  for width, depth in zip(widths, DEPTHS):
    for _ in range(depth):
      layers += [nn.Conv2d(c_in, width, 3, padding=1)]
      layers += [nn.BatchNorm2d(width)] if bn else []
      layers += [nn.ReLU(inplace=True)]
      c_in = width
    layers += [nn.MaxPool2d(2, 2)]
  features = nn.Sequential(*layers)
  classifier = nn.Sequential(nn.Linear(c_in * 49, fc), nn.ReLU(True), nn.Dropout(),
                             nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, 10))
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in features.modules():
      if isinstance(m, nn.BatchNorm2d):
        for t in (m.weight, m.bias, m.running_mean):
          t.copy_(torch.rand(t.shape, generator=gen) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
  return features.eval(), classifier.eval()


def tiny_vgg_config(name: str, bn: bool, fc: int) -> ml_collections.ConfigDict:
  config = load_config(name)
  model = config.model.to_dict()
  model["backbone"] = {**model["backbone"], "name": "vgg16_bn" if bn else "vgg16",
                       "widths": TINY}
  model["decode_head"]["channels"] = fc
  config.model = model
  config.data.crop_size = (64, 64)
  return config


@pytest.mark.parametrize("bn", [False, True])
def test_torchvision_vgg_converts_to_equal_features_and_fc(tmp_path, bn):
  """features.* -> backbone conv1_1..conv5_3 (BN statistics included): every stage's output
  equals torchvision-layout VGG's; classifier.0 / .3 -> the FCN head's fc6 / fc7, whose
  output at the centre of a 7x7 pool5 equals the Linear layers' on torch's flatten."""
  torch = require("torch")
  fc = 12
  features, classifier = torchvision_layout_vgg(torch, TINY, bn, fc)
  state = {**{f"features.{k}": v for k, v in features.state_dict().items()},
           **{f"classifier.{k}": v for k, v in classifier.state_dict().items()}}
  torch.save(state, tmp_path / "vgg16.pth")
  config = tiny_vgg_config("fcn8s_vgg16_voc", bn, fc)
  _, flat = convert_main.convert(str(tmp_path / "vgg16.pth"), str(tmp_path / "out"), config,
                                 fmt="torchvision_vgg")
  tree = torch_layout.nest(flat)
  assert sorted(tree["params"]) == ["backbone", "decode_head"]
  assert sorted(tree["params"]["decode_head"]) == ["fc6", "fc7"]

  backbone = BACKBONES.build({**config.model.backbone, "out_indices": (0, 1, 2, 3, 4)}, "b")
  x = np.random.RandomState(0).randn(1, 64, 96, 3).astype(np.float32)
  variables = {"params": tree["params"]["backbone"]}
  if bn:
    variables["batch_stats"] = tree["batch_stats"]["backbone"]
  ours = backbone.apply(variables, x, train=False)
  pools = [i for i, m in enumerate(features) if isinstance(m, torch.nn.MaxPool2d)]
  with torch.no_grad():
    h, theirs = torch.from_numpy(x.transpose(0, 3, 1, 2)), []
    for i, module in enumerate(features):
      h = module(h)
      if i in pools:
        theirs.append(h.numpy().transpose(0, 2, 3, 1))
  for a, b in zip(ours, theirs):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=1e-4 * np.abs(b).max())

  # fc6 / fc7 inside the model: a 221x221 image padded by 3 (FCN's input_pad) pools to 7x7.
  model = models.build_model(config)
  x = np.random.RandomState(1).randn(1, 221, 221, 3).astype(np.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, np.float32), shapes)  # the score layers
  variables = {"params": {**zeros, **tree["params"],
                          "decode_head": {**zeros["decode_head"],
                                          **tree["params"]["decode_head"]}},
               **({"batch_stats": tree["batch_stats"]} if bn else {})}
  _, state_ = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
  fc7 = np.asarray(state_["intermediates"]["decode_head"]["fc7"]["__call__"][0])
  assert fc7.shape[1:3] == (7, 7)
  with torch.no_grad():
    padded = np.pad(x, ((0, 0), (3, 0), (3, 0), (0, 0)))
    pool5 = features(torch.from_numpy(padded.transpose(0, 3, 1, 2)))
    want = classifier[:4](torch.flatten(pool5, 1)).numpy()[0]
  np.testing.assert_allclose(fc7[0, 3, 3], want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_torchvision_fc_layers_subsample_into_largefov():
  """DeepLab-LargeFOV's fc6 (3x3 at rate 12, 1024) and fc7 (1024) from VGG's: taps 0, 3, 6
  of the 7x7 kernel, every 4th channel."""
  rng = np.random.RandomState(0)
  state = {f"features.{i}.{leaf}": rng.randn(*shape).astype(np.float32)
           for i, (name) in torchvision_vgg.feature_positions(False)
           for leaf, shape in (("weight", (2, 2, 3, 3)), ("bias", (2,)))}
  state["classifier.0.weight"] = rng.randn(16, 2 * 49).astype(np.float32)
  state["classifier.0.bias"] = rng.randn(16).astype(np.float32)
  state["classifier.3.weight"] = rng.randn(16, 16).astype(np.float32)
  state["classifier.3.bias"] = rng.randn(16).astype(np.float32)
  targets = {"fc6": ("params/decode_head/fc6", (3, 3, 2, 4)),
             "fc7": ("params/decode_head/fc7", (1, 1, 4, 4))}
  flat = torchvision_vgg.convert_torchvision_vgg(state, "vgg.pth", targets)
  fc6 = state["classifier.0.weight"].reshape(16, 2, 7, 7)  # torch's (C, H, W) flatten
  for i, ti in enumerate((0, 3, 6)):
    for j, tj in enumerate((0, 3, 6)):
      np.testing.assert_array_equal(flat["params/decode_head/fc6/kernel"][i, j],
                                    fc6[::4, :, ti, tj].T)
  np.testing.assert_array_equal(flat["params/decode_head/fc6/bias"],
                                state["classifier.0.bias"][::4])
  np.testing.assert_array_equal(flat["params/decode_head/fc7/kernel"][0, 0],
                                state["classifier.3.weight"][::4, ::4].T)


def test_torchvision_vgg_refuses_unknown_and_missing_tensors():
  rng = np.random.RandomState(0)
  state = {f"features.{i}.{leaf}": rng.randn(*shape).astype(np.float32)
           for i, _ in torchvision_vgg.feature_positions(False)
           for leaf, shape in (("weight", (2, 2, 3, 3)), ("bias", (2,)))}
  with pytest.raises(CheckpointError, match=r"first 'features\.29\.weight'"):
    torchvision_vgg.convert_torchvision_vgg({**state, "features.29.weight": state[
        "features.28.weight"]}, "vgg.pth")
  with pytest.raises(CheckpointError, match=r"'features\.28\.bias' \(conv5_3\) is missing"):
    torchvision_vgg.convert_torchvision_vgg(
        {k: v for k, v in state.items() if k != "features.28.bias"}, "vgg.pth")
  with pytest.raises(CheckpointError, match=r"tensor 'fc\.weight' is not torchvision VGG's"):
    torchvision_vgg.convert_torchvision_vgg({**state, "fc.weight": np.zeros(2)}, "vgg.pth")
  with pytest.raises(CheckpointError, match=r"'classifier\.0\.weight' / '\.bias' is missing"):
    torchvision_vgg.convert_torchvision_vgg(state, "vgg.pth",
                                            {"fc6": ("params/fc6", (7, 7, 2, 4))})


# ---------------------------------------------------------------------------------------------
# Configs, schedules and config errors.

def test_bad_values_are_config_errors_naming_the_key():
  with pytest.raises(ConfigError, match=r"model.backbone.pools needs one entry per stage"):
    BACKBONES.build({"name": "vgg16", "pools": ((2, 2, 0),) * 4}, "model.backbone")
  with pytest.raises(ConfigError, match=r"model.backbone.pools\[3\] must be"):
    BACKBONES.build({"name": "vgg16", "pools": ((2, 2, 0),) * 3 + ((2, 2, 2), None)},
                    "model.backbone")
  with pytest.raises(ConfigError, match=r"model.decode_head.variant must be one of"):
    MODELS.build({"name": "context_module", "decode_head": {"variant": "huge"}}, "model",
                 num_classes=3)
  with pytest.raises(ConfigError, match=r"model.decode_head.upsample must be one of"):
    MODELS.build({"name": "fcn8s", "decode_head": {"name": "fcn_skip_head", "upsample": 4}},
                 "model", num_classes=3)
  config = load_config("deeplabv1_vgg16_largefov_voc")
  config.optim.lr_step_gamma = 0.0
  with pytest.raises(ConfigError, match=r"optim.lr_step_gamma"):
    optim.make_optimizer(config.optim, {"w": jnp.zeros(2)}, 10)


def test_deeplab_step_schedule():
  """Caffe's "step" policy of DeepLab v1: 1e-3, x0.1 at 2000 and 4000; fc8 at x10."""
  config = load_config("deeplabv1_vgg16_largefov_voc")
  schedule = optim.warmup_poly_schedule(config.optim, config.train.num_steps)
  fc8 = optim.warmup_poly_schedule(config.optim, config.train.num_steps, 10.0)
  got = [float(schedule(s)) for s in (0, 1999, 2000, 3999, 4000, 5999)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)
  np.testing.assert_allclose(float(fc8(2000)), 1e-3, rtol=1e-6)
  groups = optim.param_groups({"decode_head": {"fc8": {"kernel": 0, "bias": 0},
                                               "fc7": {"kernel": 0, "bias": 0}}},
                              config.optim)
  assert groups == {"decode_head/fc8/kernel": (10.0, True), "decode_head/fc8/bias": (20.0, False),
                    "decode_head/fc7/kernel": (1.0, True), "decode_head/fc7/bias": (2.0, False)}


# One recipe per distinct model builder (fcn32s/16s share fcn8s's code path with other skip
# settings, context basic shares large's): each run is ~40 s of compilation on 2 cores.
RECIPE_RUNS = ["fcn8s_vgg16_voc", "deeplabv1_vgg16_largefov_voc", "parsenet_vgg16_voc",
               "context_vgg16_large_voc"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPE_RUNS)
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """configs/<name>.py at test widths through train.train_and_evaluate (test_zoo_training's
  check): the recipe's SGD groups (frozen upsampling, Caffe bias rule, classifier x10, step
  schedule), one step, evaluation and a checkpoint that restores."""
  test_zoo_training.check_recipe_trains_one_step_and_evaluates(name, tmp_path)
