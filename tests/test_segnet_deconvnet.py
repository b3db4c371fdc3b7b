"""SegNet and DeconvNet: pooling with indices and unpooling against PyTorch, parameter counts
derived from the authors' Caffe prototxts, index routing through the whole decoders, and
both recipes through the trainer."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax import data as data_lib
from segjax import models
from segjax.errors import ConfigError
from segjax.models import deconvnet, layers
from tests import test_zoo_training as zoo
from tests.conftest import load_config, one_step_run, require


# ------------------------------------------------------------------------------------------
# max_pool_with_indices / max_unpool == torch's max_pool2d(ceil_mode=True, return_indices)
# and max_unpool2d, values, indices and gradients.


@pytest.mark.parametrize("shape,window", [((2, 7, 9, 3), 2), ((2, 1, 5, 1), 2),
                                          ((1, 7, 8, 2), 3)])
def test_pool_and_unpool_equal_torch_with_ties_and_odd_sizes(shape, window):
  torch = require("torch")
  f = torch.nn.functional
  r = np.random.RandomState(sum(shape) + window)
  x = r.randint(-2, 3, size=shape).astype(np.float32)  # small ints: ties in most windows
  h, w = shape[1:3]
  pooled_shape = (shape[0], -(-h // window), -(-w // window), shape[3])
  a = r.randn(*pooled_shape).astype(np.float32)  # seeds of the two gradients
  b = r.randn(*shape).astype(np.float32)

  @jax.jit
  def ours(x):
    pool = lambda x: layers.max_pool_with_indices(x, window, window)  # noqa: E731
    pooled, indices = pool(x)
    unpool = lambda p: layers.max_unpool(p, indices, (h, w), window)  # noqa: E731
    # Gradients of <pooled, a> w.r.t. x (to the chosen max only) and of <unpooled, b>
    # w.r.t. the pooled values (read at the indices).
    return (pooled, indices, unpool(pooled), jax.grad(lambda x: jnp.sum(pool(x)[0] * a))(x),
            jax.grad(lambda p: jnp.sum(unpool(p) * b))(pooled))
  pooled, indices, unpooled, grad_x, grad_p = ours(jnp.asarray(x))

  nchw = lambda v: torch.tensor(v.transpose(0, 3, 1, 2), requires_grad=True)  # noqa: E731
  nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)  # noqa: E731
  xt = nchw(x)
  pt, it = f.max_pool2d(xt, window, window, ceil_mode=True, return_indices=True)
  (pt * nchw(a)).sum().backward()
  pt2 = nchw(nhwc(pt))
  ut = f.max_unpool2d(pt2, it, window, window, output_size=(h, w))
  (ut * nchw(b)).sum().backward()
  np.testing.assert_array_equal(pooled, nhwc(pt))
  np.testing.assert_array_equal(indices, nhwc(it))  # first max of each window, as torch
  np.testing.assert_array_equal(unpooled, nhwc(ut))
  np.testing.assert_array_equal(grad_x, nhwc(xt.grad))
  np.testing.assert_array_equal(grad_p, nhwc(pt2.grad))


def test_unpool_puts_each_max_back_where_it_was():
  x = np.zeros((1, 3, 5, 1), np.float32)
  x[0, 1, 0, 0], x[0, 0, 3, 0], x[0, 2, 4, 0] = 5.0, 7.0, 9.0  # a max in each of 3 windows
  pooled, indices = layers.max_pool_with_indices(jnp.asarray(x) - 1.0)  # all others are -1
  assert pooled.shape == (1, 2, 3, 1)  # ceil mode: the odd last row and column kept
  np.testing.assert_array_equal(pooled[0, :, :, 0], [[4, 6, -1], [-1, -1, 8]])
  # h * 5 + w of each max; the all -1 windows pick their first pixel (ties: torch's rule).
  np.testing.assert_array_equal(indices[0, :, :, 0], [[5, 3, 4], [10, 12, 14]])
  np.testing.assert_array_equal(layers.max_unpool(pooled + 1.0, indices, (3, 5)), x)


# ------------------------------------------------------------------------------------------
# Parameter counts from the authors' Caffe models.

# github.com/alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt (CamVid, 11 classes):
# every Convolution (name, input channels, num_output, kernel_size), each with a bias (the
# default bias_term), each but the classifier conv1_1_D followed by a "BN" layer (scale+shift).
SEGNET_CAFFE = (
    [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), ("conv2_1", 64, 128, 3),
     ("conv2_2", 128, 128, 3), ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3),
     ("conv3_3", 256, 256, 3), ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
     ("conv4_3", 512, 512, 3), ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
     ("conv5_3", 512, 512, 3),
     ("conv5_3_D", 512, 512, 3), ("conv5_2_D", 512, 512, 3), ("conv5_1_D", 512, 512, 3),
     ("conv4_3_D", 512, 512, 3), ("conv4_2_D", 512, 512, 3), ("conv4_1_D", 512, 256, 3),
     ("conv3_3_D", 256, 256, 3), ("conv3_2_D", 256, 256, 3), ("conv3_1_D", 256, 128, 3),
     ("conv2_2_D", 128, 128, 3), ("conv2_1_D", 128, 64, 3), ("conv1_2_D", 64, 64, 3)],
    ("conv1_1_D", 64, 11, 3))
# github.com/HyeonwooNoh/DeconvNet model/DeconvNet/DeconvNet_inference_deploy.prototxt (VOC,
# 21 classes): every CONVOLUTION / DECONVOLUTION (name, inputs, num_output, kernel_size), all
# with biases (blobs_lr 1 2), each but seg-score-voc followed by a BN layer (scale+shift).
DECONVNET_CAFFE = (
    SEGNET_CAFFE[0][:13] +
    [("fc6", 512, 4096, 7), ("fc7", 4096, 4096, 1), ("fc6-deconv", 4096, 512, 7),
     ("deconv5_1", 512, 512, 3), ("deconv5_2", 512, 512, 3), ("deconv5_3", 512, 512, 3),
     ("deconv4_1", 512, 512, 3), ("deconv4_2", 512, 512, 3), ("deconv4_3", 512, 256, 3),
     ("deconv3_1", 256, 256, 3), ("deconv3_2", 256, 256, 3), ("deconv3_3", 256, 128, 3),
     ("deconv2_1", 128, 128, 3), ("deconv2_2", 128, 64, 3), ("deconv1_1", 64, 64, 3),
     ("deconv1_2", 64, 64, 3)],
    ("seg-score-voc", 64, 21, 1))


def caffe_counts(table):
  """(the Caffe model's learnable parameters, the conv biases in front of a BatchNorm)."""
  with_bn, score = table
  n = sum(cin * cout * k * k + cout + 2 * cout for _, cin, cout, k in with_bn)
  _, cin, cout, k = score
  return n + cin * cout * k * k + cout, sum(cout for _, _, cout, _ in with_bn)


def abstract_params(name, num_classes, hw=(64, 64), **kwargs):
  model = models.MODELS.build({"name": name, **kwargs}, "model", num_classes=num_classes)
  return model, jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, *hw, 3))))["params"]


@pytest.mark.parametrize("name,num_classes,table,paper", [
    ("segnet", 11, SEGNET_CAFFE, 29.5e6), ("deconvnet", 21, DECONVNET_CAFFE, 252e6)])
def test_param_counts_equal_the_caffe_models_less_biases_before_batchnorm(
    name, num_classes, table, paper):
  caffe, biases_before_bn = caffe_counts(table)
  assert abs(caffe / paper - 1) < 0.002  # the papers' rounded figures (29.5M, 252M)
  _, params = abstract_params(name, num_classes)
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  # segjax's conv-BN units carry no bias (BN's shift replaces it): the one difference.
  assert ours == caffe - biases_before_bn
  assert (caffe, ours) == {"segnet": (29_449_355, 29_441_419),
                           "deconvnet": (251_805_653, 251_788_949)}[name]
  # The encoder is VGG-16's 13 conv-BN units by name (what torchvision_vgg converts into).
  convs = [n for n, _, _, _ in table[0][:13]]
  assert sorted(params["backbone"]) == sorted(convs)
  assert all(sorted(params["backbone"][c]) == ["bn", "conv"] for c in convs)
  assert params["backbone"]["conv3_1"]["conv"]["kernel"].shape == (3, 3, 128, 256)


def test_deconvolution_unit_equals_torch_transposed_conv_bn_relu():
  """A Caffe / PyTorch (in, out, k, k) deconvolution weight loads by a transpose, no flip."""
  torch = require("torch")
  r = np.random.RandomState(0)
  for k, pad, hw in ((3, 1, (5, 6)), (7, 0, (1, 2))):
    ref = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, k, padding=pad, bias=False),
                              torch.nn.BatchNorm2d(6), torch.nn.ReLU()).eval()
    with torch.no_grad():
      ref[1].running_mean.copy_(torch.tensor(r.randn(6)))
      ref[1].running_var.copy_(torch.tensor(r.rand(6) + 0.5))
      ref[1].weight.copy_(torch.tensor(r.randn(6)))
      ref[1].bias.copy_(torch.tensor(r.randn(6)))
    x = r.randn(2, *hw, 4).astype(np.float32)
    bn = ref[1]
    variables = {
        "params": {"conv": {"kernel": ref[0].weight.detach().numpy().transpose(2, 3, 1, 0)},
                   "bn": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()}},
        "batch_stats": {"bn": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}}}
    ours = deconvnet.ConvBNReLU(6, k, pad, transpose=True).apply(variables, jnp.asarray(x),
                                                                 train=False)
    want = ref(torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    assert ours.shape == (2, hw[0] + k - 1 - 2 * pad, hw[1] + k - 1 - 2 * pad, 6)
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Whole models: any input size, and the decoder routes every value through the encoder's
# indices.

TINY = {"segnet": {"widths": (4, 8, 8, 16, 16)},
        "deconvnet": {"widths": (4, 8, 8, 16, 16), "fc_width": 16}}


def _identity_variables(model, hw):
  """Every conv and deconv a centre-tap identity from channel 0 to channel 0, biases 0, BN
  scale 1 and shift 0 with statistics mean 0 and variance 1 (built from shapes, no init)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *hw, 3)))

  def leaf(path, x):
    key = jax.tree_util.keystr(path)
    if key.endswith("['kernel']"):
      k = np.zeros(x.shape, np.float32)
      k[x.shape[0] // 2, x.shape[1] // 2, 0, 0] = 1.0
      return k
    ones = key.endswith("['scale']") or key.endswith("['var']")
    return np.ones(x.shape, np.float32) if ones else np.zeros(x.shape, np.float32)
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _kept_cells(n: int, name: str) -> range:
  """The pool5 rows (or columns) whose value reaches the logits with identity weights. All
  of SegNet's. DeconvNet's fc6 is a valid 7x7 conv whose centre tap reads padded row 3 + i
  and fc6-deconv writes it back there, so the 3 outer rows of a pool5 >= 7 are lost; a
  pool5 < 7 is padded to 7 around its centre (offset (7 - n) // 2) and only the row at
  padded 3 survives."""
  if name == "segnet":
    return range(n)
  offset = max(7 - n, 0) // 2
  return range(3 - offset, max(n, 7) - 3 - offset)


@pytest.mark.parametrize("name,hw,num_bn", [
    ("segnet", (33, 47), 25),  # pool5 2x2, four 32x32 blocks (three cut by the edges)
    ("deconvnet", (231, 47), 29)])  # pool5 8x2: fc6 unpadded in rows, padded in columns
def test_decoder_puts_each_block_max_back_at_its_pixel(name, hw, num_bn):
  """With 1-channel identity convs the encoder is five nested 2x2 max pools of a positive
  image, so each pool5 cell holds the max of a 32x32 block (ceil mode: cut at the odd
  edges), and the decoder's five unpoolings must put it back at exactly that block's argmax
  pixel, zeros elsewhere, in logits of the input's size. BN in test mode scales by
  1/sqrt(1 + 1e-5) per layer."""
  widths = {"widths": (1,) * 5, **({"fc_width": 1} if name == "deconvnet" else {})}
  model = models.MODELS.build({"name": name, **widths}, "model", num_classes=1)
  r = np.random.RandomState(1)
  x = r.uniform(0.1, 1.0, size=(2, *hw, 1)).astype(np.float32)
  images = np.concatenate([x, r.randn(2, *hw, 2).astype(np.float32)], axis=-1)  # 2 unread
  logits, aux = jax.jit(model.apply)(_identity_variables(model, hw), jnp.asarray(images))
  want = np.zeros_like(x)
  for b in range(2):
    for i in _kept_cells(-(-hw[0] // 32), name):
      for j in _kept_cells(-(-hw[1] // 32), name):
        block = x[b, 32 * i:32 * i + 32, 32 * j:32 * j + 32, 0]
        di, dj = np.unravel_index(np.argmax(block), block.shape)
        want[b, 32 * i + di, 32 * j + dj, 0] = block[di, dj]
  assert aux == () and logits.shape == want.shape
  assert np.count_nonzero(want) == {"segnet": 8, "deconvnet": 4}[name]
  got = np.asarray(logits)
  np.testing.assert_array_equal(got != 0, want != 0)
  np.testing.assert_allclose(got, want * (1 + 1e-5) ** (-num_bn / 2), rtol=1e-5)


def test_bad_widths_are_config_errors():
  with pytest.raises(ConfigError, match=r"model.widths must be 5 positive"):
    models.MODELS.build({"name": "segnet", "widths": (4, 8, 16)}, "model", num_classes=5)
  with pytest.raises(ConfigError, match=r"model.fc_width"):
    models.MODELS.build({"name": "deconvnet", "fc_width": 0}, "model", num_classes=5)
  with pytest.raises(ConfigError, match=r"model.loss\[0\]"):
    models.MODELS.build({"name": "segnet", "loss": [{"name": "cross_entropy",
                                                     "class_weight": (1.0, 2.0)}]},
                        "model", num_classes=5)


# ------------------------------------------------------------------------------------------
# Recipes: median frequency balancing, and each config trains a step and evaluates.


def test_median_frequency_weights():
  from configs import segnet_vgg16_city as recipe
  # f = 10/100, 30/100, (never seen), 5/50 -> median 0.1 -> 0.1 / f.
  weights = recipe.median_frequency_weights((10, 30, 0, 5), (100, 100, 0, 50))
  assert weights == pytest.approx((1.0, 1.0 / 3.0, 0.0, 1.0), rel=1e-12)

  class Masks:
    masks = [np.array([[0, 0, 1, 255]], np.uint8), np.array([[1, 1, 1, 1]], np.uint8)]

    def __len__(self):
      return len(self.masks)

    def load(self, i):
      return None, self.masks[i]
  class_pixels, image_pixels = recipe.class_pixel_counts(Masks(), 3)
  np.testing.assert_array_equal(class_pixels, [2, 5, 0])
  np.testing.assert_array_equal(image_pixels, [4, 8, 0])  # ignored pixels count in the image


def test_segnet_recipe_weights_its_loss_by_the_training_labels_under_root(tmp_path):
  """configs/segnet_vgg16_city.py:ROOT computes the weights from ROOT's gtFine train labels
  (a tiny Cityscapes copy whose expected trainIds come from its own table)."""
  from tests import dataset_fixtures
  masks = list(dataset_fixtures.write_cityscapes_coarse(str(tmp_path))["train"].values())
  freq = {}
  for c in range(19):
    with_c = [m for m in masks if (m == c).any()]
    if with_c:
      freq[c] = sum(int((m == c).sum()) for m in with_c) / sum(m.size for m in with_c)
  median = float(np.median(list(freq.values())))
  config = load_config("segnet_vgg16_city", str(tmp_path))
  assert config.data.root == str(tmp_path)
  assert config.model.loss[0]["class_weight"] == pytest.approx(
      [median / freq[c] if c in freq else 0.0 for c in range(19)], rel=1e-12)
  assert sorted(freq) == [0, 1, 11, 13, 18]
  assert models.build_model(config).output_losses[0][0][0] == "cross_entropy"


def tiny_whole_model_config(name: str) -> ml_collections.ConfigDict:
  """configs/<name>.py at test widths on configs/test.py's data, like
  tests/test_zoo_training.tiny_run_config (which shrinks backbone + head models). SegNet's
  cross-entropy gets median-frequency weights of the synthetic training labels, as the
  recipe computes them from Cityscapes'."""
  config = load_config(name)
  test = load_config("test")
  model = config.model.to_dict()
  model.update(TINY[model["name"]])
  if model["name"] == "segnet":
    from configs import segnet_vgg16_city as recipe
    source = data_lib.build_source(test.data, test.data.train_split)
    weights = recipe.median_frequency_weights(*recipe.class_pixel_counts(
        source, test.data.num_classes))
    assert len(weights) == 5 and 1.0 in weights
    model["loss"] = ({**model["loss"][0], "class_weight": weights},)
  config = one_step_run(config, model)
  return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segnet_vgg16_city", "deconvnet_vgg16_voc"])
def test_recipe_trains_one_step_and_evaluates(name, tmp_path, monkeypatch):
  """tests/test_zoo_training's check (one train step, evaluation of the 12 synthetic images,
  the step-1 checkpoint restored) on tiny_whole_model_config's config."""
  monkeypatch.setattr(zoo, "tiny_run_config", tiny_whole_model_config)
  zoo.check_recipe_trains_one_step_and_evaluates(name, tmp_path)
