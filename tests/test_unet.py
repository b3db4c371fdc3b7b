"""U-Net and UNet++ (whole models): parameter counts against the papers' architectures and the
official UNet++ code, the overlap-tile alignment of the valid U-Net by value, input-size rules,
UNet++ pruning and deep supervision, and both folder recipes through the real trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from segjax import losses, models
from segjax.errors import ConfigError
from segjax.models import unet, unet_plusplus
from tests.conftest import check_one_step_run, load_config

TINY = (4, 8, 16, 16, 32)  # test widths, five levels (four poolings) like the papers'
# The recipe runs use three levels: the trainer jits model.init and the train step, which
# for five levels took several times longer to compile on the test machine's 2 cores.
TINY_RUN = (4, 8, 16)


def random_variables(model, x, seed: int = 0, **kwargs):
  """Variables of `model` with numpy-drawn values: kernels N(0, 2 / fan-in), biases and
  BatchNorm parameters/statistics perturbed. Skips compiling flax's jitted random init
  (threefry for every parameter), the slowest part of these tests."""
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kwargs))

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return (rng.randn(*leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
    if "'var'" in name or "'scale'" in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return (0.1 * rng.randn(*leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def num_params(model, channels: int, size: int = 96, **kwargs) -> int:
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, channels)), **kwargs))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def conv(cin: int, cout: int, k: int = 3) -> int:
  """Weights + biases of a k x k convolution (or a k x k stride-k up-convolution)."""
  return k * k * cin * cout + cout


def test_parameter_counts_equal_the_papers_architectures():
  # U-Net, Fig. 1 of Ronneberger et al. 2015: a 1-channel 572x572 tile, two classes.
  #   contracting path, two 3x3 convs per level:
  #     1->64, 64->64: 640 + 36,928;  64->128, 128->128: 73,856 + 147,584
  #     128->256, 256->256: 295,168 + 590,080;  256->512, 512->512: 1,180,160 + 2,359,808
  #     512->1024, 1024->1024: 4,719,616 + 9,438,208
  #   expanding path, 2x2 up-conv halving the channels, then two 3x3 convs on the concat:
  #     1024->512: 2,097,664; 1024->512, 512->512: 4,719,104 + 2,359,808
  #     512->256: 524,544;    512->256, 256->256: 1,179,904 + 590,080
  #     256->128: 131,200;    256->128, 128->128: 295,040 + 147,584
  #     128->64: 32,832;      128->64, 64->64: 73,792 + 36,928
  #   final 1x1 conv 64->2: 130.                                 Total 31,030,658.
  widths = (64, 128, 256, 512, 1024)
  derived = sum(conv(a, b) + conv(b, b) for a, b in zip((1,) + widths[:-1], widths))
  derived += sum(conv(b, a, 2) + conv(2 * a, a) + conv(a, a)
                 for a, b in zip(widths[:-1], widths[1:]))
  derived += conv(64, 2, 1)
  assert derived == 31_030_658
  paper = unet.UNet(num_classes=2)
  assert num_params(paper, 1, 572, method=unet.UNet.network) == 31_030_658
  out = jax.eval_shape(lambda: paper.init_with_output(
      jax.random.key(0), jnp.zeros((1, 572, 572, 1)), method=unet.UNet.network)[0])
  assert out.shape == (1, 388, 388, 2)  # Fig. 1: 572x572 tile -> 388x388 map
  # The official UNet++ repository's U-Net (keras/helper_functions.py `U_Net`, padded
  # convolutions, nb_filter 32..512, one channel, one sigmoid class): "Total params: 7,759,521".
  assert num_params(unet.UNet(num_classes=1, widths=(32, 64, 128, 256, 512), padding="same"),
                    1) == 7_759_521
  # Its `UNetPlusPlus` (one class, deep_supervision=False: only output_4 is in the model):
  # "Total params: 9,041,601" = the encoder column, then per node X^{i,j} (j >= 1) its 2x2
  # up-conv nb[i+1] -> nb[i] and two 3x3 convs over (j + 1) * nb[i] channels, then output_4.
  nb = (32, 64, 128, 256, 512)
  derived = sum(conv(a, b) + conv(b, b) for a, b in zip((1,) + nb[:-1], nb))
  derived += sum(conv(nb[i + 1], nb[i], 2) + conv((j + 1) * nb[i], nb[i]) + conv(nb[i], nb[i])
                 for j in range(1, 5) for i in range(5 - j))
  assert derived + conv(32, 1, 1) == 9_041_601
  plain = unet_plusplus.build_unet_plusplus(1, deep_supervision=False)
  assert num_params(plain, 1) == 9_041_601
  # With deep supervision the code's output_1..3 join the model: 3 more 1x1 convs of 33.
  assert num_params(unet_plusplus.build_unet_plusplus(1), 1) == 9_041_601 + 3 * 33


def identity_params(model, x):
  """U-Net parameters that pass input channel 0 through the top level only (every other
  weight and bias 0): class-0 logit = relu^4(x[..., 0]) = x[..., 0] for x >= 0."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
  for block in ("down_0", "up_0"):  # the decoder's channel 0 is the cropped copy's channel 0
    for c in ("conv_0", "conv_1"):
      params[block][c]["kernel"][1, 1, 0, 0] = 1.0
  params["classifier"]["kernel"][0, 0, 0, 0] = 1.0
  return {"params": params}


def test_valid_unet_output_is_aligned_with_its_input_by_value():
  """Overlap-tile: an identity-like U-Net returns its input pixel for pixel at any size (a
  one-pixel offset of the mirroring would fail), and `__call__` equals the explicit
  computation (numpy mirror-pad by the 92-pixel margin, valid network, crop); tiles of a large
  image predicted separately equal the whole prediction (the paper's seamless tiling)."""
  model = unet.UNet(num_classes=3, widths=TINY)
  rng = np.random.RandomState(0)
  x = rng.uniform(0.1, 1.0, (2, 37, 53, 3)).astype(np.float32)  # sides not 16 j + 4
  logits, aux = jax.jit(model.apply)(identity_params(model, x), x)
  assert aux == () and logits.shape == (2, 37, 53, 3)
  np.testing.assert_array_equal(logits[..., 0], x[..., 0])
  np.testing.assert_array_equal(logits[..., 1:], 0.0)

  x = rng.randn(1, 36, 40, 3).astype(np.float32)
  variables = random_variables(model, x, 1)
  network = jax.jit(lambda v, t: model.apply(v, t, method=unet.UNet.network))
  # Valid outputs are 16 j + 4: 36 is one, 40 is not (52 is the next): padded (92, 92 + 12).
  padded = np.pad(x, ((0, 0), (92, 92), (92, 92 + 12), (0, 0)), mode="reflect")
  assert padded.shape[1:3] == (220, 236)
  whole = network(variables, padded)
  assert whole.shape[1:3] == (36, 52)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, x)[0], whole[:, :, :40],
                             rtol=1e-5, atol=1e-5)
  # Output tiles of 20x20 at offsets multiple of 16 from input tiles of 204x204.
  for y0, x0 in ((0, 0), (16, 32)):
    tile = network(variables, padded[:, y0:y0 + 204, x0:x0 + 204])
    np.testing.assert_allclose(tile, whole[:, y0:y0 + 20, x0:x0 + 20], rtol=1e-5, atol=1e-5)


def test_crops_are_centred_at_every_level(monkeypatch):
  """With kernels symmetric under flips, the valid network commutes with flipping its input
  exactly when every copy is centre-cropped; a top-left crop breaks it (the check can fail)."""
  model = unet.UNet(num_classes=2, widths=TINY)
  x = np.random.RandomState(1).randn(1, 204, 204, 3).astype(np.float32)
  params = random_variables(model, x, 2, method=unet.UNet.network)["params"]
  symmetric = jax.tree.map(
      lambda k: (k + k[::-1] + k[:, ::-1] + k[::-1, ::-1]) / 4 if k.ndim == 4 else k, params)
  variables = {"params": symmetric}

  def flip_gap():
    net = jax.jit(lambda t: model.apply(variables, t, method=unet.UNet.network))
    out = net(x)
    return max(float(np.max(np.abs(net(x[:, ::-1])[:, ::-1] - out))),
               float(np.max(np.abs(net(x[:, :, ::-1])[:, :, ::-1] - out)))), out

  gap, out = flip_gap()
  assert out.shape == (1, 20, 20, 2) and gap < 1e-5 * float(np.max(np.abs(out)))
  monkeypatch.setattr(unet, "center_crop", lambda t, size: t[:, :size[0], :size[1]])
  gap, out = flip_gap()
  assert gap > 1e-2 * float(np.max(np.abs(out)))


def test_input_sizes_and_config_errors(test_config):
  valid = unet.UNet(num_classes=2, widths=TINY)
  variables = random_variables(valid, np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"input side 200 .* e\.g\. 188 or 204"):
    valid.apply(variables, jnp.zeros((1, 200, 204, 3)), method=unet.UNet.network)
  # The padded form (with BatchNorm) at odd sizes: mirror-padded to multiples of 16 at the
  # bottom and right, logits cropped back; the raw network refuses such sizes.
  same = unet.UNet(num_classes=2, widths=TINY, padding="same", norm=True)
  x = np.random.RandomState(2).randn(2, 37, 53, 3).astype(np.float32)
  variables = random_variables(same, x, 1)
  assert "batch_stats" in variables
  padded = np.pad(x, ((0, 0), (0, 11), (0, 11), (0, 0)), mode="reflect")
  np.testing.assert_allclose(
      same.apply(variables, x)[0],
      same.apply(variables, padded, method=unet.UNet.network)[:, :37, :53], rtol=1e-6)
  with pytest.raises(ValueError, match="multiples of 16"):
    same.apply(variables, x, method=unet.UNet.network)

  bad = [({"name": "unet", "padding": "full"}, "model.padding"),
         ({"name": "unet", "widths": (64,)}, "model.widths"),
         ({"name": "unet", "dropout": 1.0}, "model.dropout"),
         ({"name": "unet", "pad_mode": "edge"}, "model.pad_mode"),
         ({"name": "unet", "loss": ({"name": "dice", "bogus": 1},)}, r"model.loss\[0\]"),
         ({"name": "unet_plusplus", "prune_level": 5}, "model.prune_level"),
         ({"name": "unet_plusplus", "prune_level": 2, "deep_supervision": False},
          "needs model.deep_supervision"),
         ({"name": "unet_plusplus", "average_heads": True, "deep_supervision": False},
          "model.average_heads")]
  for model_cfg, message in bad:
    test_config.model = model_cfg
    with pytest.raises(ConfigError, match=message):
      models.build_model(test_config)


def tiny_unetpp(**kwargs):
  return unet_plusplus.build_unet_plusplus(5, widths=TINY, **kwargs)


def used_params(params, level: int):
  """The parameters UNet++ L^level needs: nodes i + j <= level, heads 1..level."""
  def needed(name):
    if name.startswith("output_"):
      return int(name.split("_")[1]) <= level
    i, j = map(int, name.split("_")[1:])
    return i + j <= level
  return {name: p for name, p in params.items() if needed(name)}


def test_pruned_unet_plusplus_is_the_full_models_head_with_less_work():
  """UNet++ L^k (prune_level=k) given only the parameters of nodes i + j <= k returns exactly
  the full model's k-th head, with fewer parameters and FLOPs at every smaller k."""
  full = tiny_unetpp()
  x = np.random.RandomState(3).randn(2, 37, 53, 3).astype(np.float32)
  params = random_variables(full, x, 3)["params"]
  logits, aux = jax.jit(full.apply)({"params": params}, x)
  heads = list(aux) + [logits]  # X^{0,1} .. X^{0,4}
  assert len(heads) == 4 and full.aux_loss_weights == (1.0, 1.0, 1.0)
  counts, flops = [], []
  for k in range(1, 5):
    pruned = tiny_unetpp(prune_level=k)
    subset = {"params": used_params(params, k)}
    out, pruned_aux = jax.jit(pruned.apply)(subset, x)
    np.testing.assert_array_equal(out, heads[k - 1])
    assert len(pruned_aux) == k - 1 and pruned.aux_loss_weights == (1.0,) * (k - 1)
    # init still creates the whole network (a full checkpoint restores into any level).
    assert jax.tree.structure(jax.eval_shape(lambda m=pruned: m.init(
        jax.random.key(0), x)["params"])) == jax.tree.structure(params)
    counts.append(sum(p.size for p in jax.tree.leaves(subset)))
    flops.append(jax.jit(lambda v, t, m=pruned: m.apply(v, t)[0]).lower(
        subset, x).cost_analysis()["flops"])
  assert counts[-1] == sum(p.size for p in jax.tree.leaves(params))
  assert counts == sorted(set(counts)) and flops == sorted(set(flops))
  assert flops[0] < 0.25 * flops[-1]


def test_deep_supervision_heads_enter_the_loss_as_the_recipe_says():
  """The recipe's loss on the four heads (three aux outputs, weight 1 each) equals
  sum_k 0.5 * CE_k + Dice_k computed here in numpy; accurate mode averages the softmaxes."""
  config = load_config("unet_plusplus_folder")
  config.model.widths = TINY
  model = models.build_model(config)
  rng = np.random.RandomState(4)
  x = rng.randn(2, 32, 48, 3).astype(np.float32)
  labels = rng.randint(0, 2, (2, 32, 48))
  labels[0, :5] = 255
  variables = random_variables(model, x, 4)
  logits, aux = jax.jit(model.apply)(variables, x)
  total, parts = losses.segmentation_loss(logits, aux, labels, model.aux_loss_weights,
                                          model.output_losses)

  def head_loss(z):
    z = np.asarray(z, np.float64)
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, safe[..., None], -1)[..., 0][valid].mean()
    pred = 1 / (1 + np.exp(-z))  # sigmoid of each class channel
    target = np.eye(2)[safe] * valid[..., None]
    inter = (pred * target).sum((1, 2, 3))
    dice = (2 * inter + 1) / (pred.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return 0.5 * ce + np.mean(1 - dice)

  expected = sum(head_loss(z) for z in (logits, *aux))
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  np.testing.assert_allclose(float(parts["loss_aux0"]), head_loss(aux[0]), rtol=1e-5)

  config.model.average_heads = True
  accurate = models.build_model(config)
  mean_logits = jax.jit(accurate.apply)(variables, x)[0]
  probs = [jax.nn.softmax(z, axis=-1) for z in (*aux, logits)]
  np.testing.assert_allclose(mean_logits, np.log(sum(probs) / 4), rtol=1e-5, atol=1e-6)


def write_folder_dataset(root, sizes=(("train", 8), ("val", 4))):
  """{root}/images/{split}/*.png + masks/*.png (segjax/data/folder.py): a bright disc (class 1)
  on a dark noisy background (class 0), 48x48."""
  rng = np.random.RandomState(0)
  yy, xx = np.mgrid[:48, :48]
  for split, n in sizes:
    (root / "images" / split).mkdir(parents=True)
    (root / "masks" / split).mkdir(parents=True)
    for i in range(n):
      cy, cx, r = rng.randint(12, 36), rng.randint(12, 36), rng.randint(5, 11)
      mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
      image = np.clip(40 + 160 * mask[..., None] + rng.randint(0, 40, (48, 48, 3)), 0, 255)
      Image.fromarray(image.astype(np.uint8)).save(root / "images" / split / f"{i}.png")
      Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")


@pytest.mark.parametrize("name", ["unet_folder", "unet_plusplus_folder"])
def test_folder_recipe_trains_one_step_and_evaluates(name, tmp_path):
  """configs/<name>.py on a tiny folder dataset with test widths (three levels): the recipe's
  model form, optimizer and losses run one step through train.train_and_evaluate, evaluate
  the 4 val images and leave a checkpoint that restores (tests/test_zoo_training.py's check,
  for a whole model and folder data)."""
  write_folder_dataset(tmp_path / "data")
  config = load_config(name)
  test = load_config("test")
  config.model.widths = TINY_RUN
  config.data.root = str(tmp_path / "data")
  config.data.base_size = config.data.crop_size = (48, 48)
  config.data.num_parallel_calls = 2
  mode, config.eval = config.eval.mode, test.eval
  config.eval.mode = mode
  config.train.update(batch_size=8, num_steps=1, log_every=1, eval_every=1, checkpoint_every=1,
                      num_overlays=0, async_checkpoint=False)
  check_one_step_run(config, tmp_path / "run", num_images=4)
