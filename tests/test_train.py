"""Training: learning, sharding invariance, resume, preemption, NaN, evaluate/predict modes."""
import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from segjax import checkpoint as ckpt_lib
from segjax import data as data_lib
from segjax import evaluate, models, optim, parallel, predict, train
from segjax.data import pipeline
from segjax.errors import CheckpointError, ConfigError, TrainingDivergedError
from segjax.inference import Segmenter
from tests.conftest import load_config, require


def make_state_and_step(config, mesh, tx_fn=None):
  model = models.build_model(config)
  tx_fn = tx_fn or (lambda p: optim.make_optimizer(config.optim, p, 100))
  state, tx = train.init_state(model, config, mesh, tx_fn)
  step = train.jit_train_step(model, tx, config, mesh, donate=False)
  return state, step


def test_loss_decreases_over_30_steps(test_config):
  test_config.train.batch_size = 16
  mesh = parallel.make_mesh()
  state, step = make_state_and_step(test_config, mesh)
  source = data_lib.build_source(test_config.data, "train")
  batches = pipeline.train_batches(source, test_config.data, seed=0, global_batch=16)
  losses = []
  for _ in range(30):
    state, m = step(state, parallel.global_batch(next(batches), mesh), jax.random.key(0))
    losses.append(float(m["loss"]))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_8_device_step_equals_1_device_step(test_config):
  source = data_lib.build_source(test_config.data, "train")
  batches = list(zip(range(2), pipeline.train_batches(source, test_config.data, seed=0,
                                                      global_batch=8)))
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    assert len(devices) in (1, 8)
    mesh = parallel.make_mesh(devices)
    # SGD: the update is the gradient itself. (Adam would turn the float noise of
    # exactly-zero gradients, e.g. biases feeding a train-mode BatchNorm, into +-lr steps.)
    state, step = make_state_and_step(test_config, mesh, lambda p: optax.sgd(0.1))
    for _, local in batches:
      state, metrics = step(state, parallel.global_batch(local, mesh), jax.random.key(0))
    results.append((jax.device_get(state.params), jax.device_get(state.batch_stats),
                    float(metrics["loss"])))
  (p1, b1, l1), (p8, b8, l8) = results
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), p1, p8)
  # BatchNorm statistics are global over the batch, not per device.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), b1, b8)


def test_optimizer_groups(test_config):
  test_config.model.auxiliary_head = ({"name": "fcn_head", "in_index": 2, "channels": 8,
                                       "loss_weight": 0.4},)
  model = models.build_model(test_config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  groups = optim.param_groups(params["params"], test_config.optim)
  assert groups["backbone/block0_0/norm1/scale"] == (1.0, False)
  assert groups["backbone/block0_0/mlp/dwconv/kernel"] == (1.0, False)
  assert groups["backbone/block0_0/attn/query/kernel"] == (1.0, True)
  assert groups["decode_head/classifier/kernel"] == (10.0, True)
  assert groups["decode_head/fuse_bn/scale"] == (10.0, False)
  # Norms are found by module type, whatever their name: the aux head's ConvBNAct `bn` too.
  assert groups["auxiliary_head_0/convs_0/bn/scale"] == (10.0, False)
  assert groups["auxiliary_head_0/convs_0/bn/bias"] == (10.0, False)
  assert groups["auxiliary_head_0/conv_seg/bias"] == (10.0, True)
  sched = optim.warmup_poly_schedule(test_config.optim, 10)
  assert float(sched(0)) == pytest.approx(1e-9, rel=0.1) and float(sched(2)) == pytest.approx(1e-3)
  assert float(sched(10)) == pytest.approx(0.0)


def test_sgd_poly_equals_torch_sgd_and_polylr():
  """optim.name=sgd is torch.optim.SGD (momentum, coupled L2) under mmseg's PolyLR, whose
  eta_min is the same absolute floor for a group with lr_mult 10."""
  torch = require("torch")
  cfg = load_config("fcn_r50_d8_city").optim
  cfg.lr_mults = (("^head", 10.0),)
  num_steps = 5
  rng = np.random.RandomState(0)
  params = {"body": {"kernel": rng.randn(3, 4).astype(np.float32)},
            "head": {"kernel": rng.randn(4).astype(np.float32)}}
  grads = [jax.tree.map(lambda p: rng.randn(*p.shape).astype(np.float32), params)
           for _ in range(num_steps)]
  tx = optim.make_optimizer(cfg, params, num_steps)
  state, ours = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, ours)
    ours = optax.apply_updates(ours, updates)

  body = torch.nn.Parameter(torch.tensor(params["body"]["kernel"]))
  head = torch.nn.Parameter(torch.tensor(params["head"]["kernel"]))
  opt = torch.optim.SGD([{"params": [body], "lr": cfg.lr}, {"params": [head], "lr": cfg.lr * 10}],
                        lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
  base = [cfg.lr, cfg.lr * 10]
  for step, g in enumerate(grads):
    for group, lr in zip(opt.param_groups, base):  # mmengine PolyLR, by iteration
      group["lr"] = (lr - cfg.end_lr) * (1 - step / num_steps) ** cfg.poly_power + cfg.end_lr
    body.grad, head.grad = torch.tensor(g["body"]["kernel"]), torch.tensor(g["head"]["kernel"])
    opt.step()
  np.testing.assert_allclose(ours["body"]["kernel"], body.detach().numpy(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours["head"]["kernel"], head.detach().numpy(), rtol=1e-5, atol=1e-7)
  assert not np.allclose(ours["head"]["kernel"], params["head"]["kernel"], atol=1e-3)

  cfg.lr_mults = (("^head", 0.0),)  # frozen: not even weight decay moves it
  tx = optim.make_optimizer(cfg, params, num_steps)
  updates, _ = tx.update(grads[0], tx.init(params), params)
  assert np.all(np.asarray(updates["head"]["kernel"]) == 0)
  assert np.any(np.asarray(updates["body"]["kernel"]) != 0)


def small_run_config(**train_kw):
  c = load_config("test")
  c.train.async_checkpoint = False
  c.train.update(train_kw)
  return c


def params_of(workdir, config, which="latest"):
  model = models.build_model(config)
  target = evaluate.abstract_variables(model, config, parallel.make_mesh())
  return ckpt_lib.Checkpointer(workdir).restore_model(which, target)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One uninterrupted 6-step run (checkpoints and evals at steps 3 and 6)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  config = small_run_config()
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_run_leaves_its_artifacts(trained):
  config, workdir, results = trained
  for name in ("config.json", "eval_results.json", "eval_history.jsonl", "overlays"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  saved = json.load(open(os.path.join(workdir, "eval_results.json")))
  assert saved["step"] == 6 and saved["class_names"][1] == "disc"
  assert saved["metrics"]["mIoU"] == results["mIoU"]
  assert saved["metrics"]["num_images"] == config.data.synthetic_eval_size
  history = [json.loads(line) for line in open(os.path.join(workdir, "eval_history.jsonl"))]
  assert [h["step"] for h in history] == [3, 6]


def test_tools_read_a_run(trained, tmp_path):
  """confusion_matrix, plot_curves and browse_data on the run's own files, checked by values."""
  from segjax.tools import browse_data, confusion_matrix, plot_curves
  config, workdir, _ = trained
  cm, names, step = confusion_matrix.load(workdir)
  saved = json.load(open(os.path.join(workdir, "eval_results.json")))["metrics"]
  assert step == 6 and names[1] == "disc" and cm.sum() == saved["num_pixels"]
  np.testing.assert_allclose(np.diag(confusion_matrix.normalise(cm)),
                             [saved["Acc"][n] or 0.0 for n in names])
  confusion_matrix.plot(cm, names, str(tmp_path / "cm.png"), "t")
  assert Image.open(tmp_path / "cm.png").size[0] > 100

  curves = plot_curves.read_scalars(workdir)
  assert [s for s, _ in curves["train/loss"]] == [2, 4, 6]  # train.log_every = 2
  assert all(np.isfinite(v) and v > 0 for _, v in curves["train/loss"] + curves["train/lr"])
  assert plot_curves.read_eval(workdir) == [
      (json.loads(l)["step"], json.loads(l)["mIoU"])
      for l in open(os.path.join(workdir, "eval_history.jsonl"))]
  plot_curves.plot({"a": {**curves, "eval/mIoU": plot_curves.read_eval(workdir)}},
                   str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").exists()

  images, masks = browse_data.samples(config, 3, step=1)
  batch = next(pipeline.train_batches(data_lib.build_source(config.data, "train"), config.data,
                                      seed=config.seed, global_batch=3, start_step=1))
  np.testing.assert_array_equal(masks, batch["label"])  # exactly the trainer's batch
  restored = (images.astype(np.float32) - np.array(config.data.mean)) / np.array(config.data.std)
  np.testing.assert_allclose(restored, batch["image"], atol=0.6 / 57)  # uint8 rounding
  panel = browse_data.grid(images, masks, data_lib.palette(config.data))
  assert panel.shape == (3 * images.shape[1], 3 * images.shape[2], 3)


def test_kill_and_resume_continues_the_same_trajectory(trained, tmp_path, monkeypatch):
  config, ref_dir, _ = trained
  real = pipeline.train_batches
  seen = []

  def dying(*args, **kwargs):  # the process "dies" while fetching the 5th batch
    for i, batch in enumerate(real(*args, **kwargs)):
      if kwargs.get("start_step", 0) == 0 and i == 4:
        raise KeyboardInterrupt("simulated kill")
      seen.append((kwargs.get("start_step", 0) + i, batch["label"].copy()))
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", dying)
  workdir = str(tmp_path)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  assert ckpt_lib.Checkpointer(workdir).latest_step() == 3
  train.train_and_evaluate(config, workdir)  # resumes at step 3
  steps = [s for s, _ in seen]
  assert steps == [0, 1, 2, 3, 3, 4, 5]  # batch 3 was fetched before the kill and again after
  np.testing.assert_array_equal(seen[3][1], seen[4][1])
  step, resumed = params_of(workdir, config)
  _, reference = params_of(ref_dir, config)
  assert step == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               resumed, reference)



def test_a_finished_run_killed_in_its_final_eval_evaluates_on_restart(trained, tmp_path):
  """The last checkpoint is saved before the final evaluation; a kill in between leaves
  eval_results.json at an older step. Restarting evaluates the last step (no training), so a
  finished run always ends with its own results; a second restart does nothing."""
  config, ref_dir, results = trained
  workdir = tmp_path / "run"
  shutil.copytree(ref_dir, workdir)
  saved = json.loads((workdir / "eval_results.json").read_text())
  (workdir / "eval_results.json").write_text(json.dumps({**saved, "step": 3}))
  again = train.train_and_evaluate(config, str(workdir))
  restored = json.loads((workdir / "eval_results.json").read_text())
  assert restored["step"] == 6
  assert again["mIoU"] == pytest.approx(results["mIoU"], abs=1e-6)
  assert [json.loads(l)["step"] for l in open(workdir / "eval_history.jsonl")] == [3, 6]
  assert train.train_and_evaluate(config, str(workdir)) == {}

def test_sigterm_checkpoints_and_exits(tmp_path, monkeypatch):
  config = small_run_config(num_steps=50, checkpoint_every=100, eval_every=100)
  real = pipeline.train_batches

  def preempting(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", preempting)
  previous = signal.getsignal(signal.SIGTERM)
  try:
    train.train_and_evaluate(config, str(tmp_path))
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 3


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  config = small_run_config(num_steps=6, log_every=1)
  real = pipeline.train_batches

  def poisoned(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 4:
        batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
      yield batch

  monkeypatch.setattr(pipeline, "train_batches", poisoned)
  with pytest.raises(TrainingDivergedError, match="loss is nan at step 5; .*last checkpoint"):
    train.train_and_evaluate(config, str(tmp_path))
  step, variables = params_of(str(tmp_path), config)
  assert step == 3
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


@pytest.mark.parametrize("which", ["latest", "best", "3"])
def test_evaluate_mode_reproduces_training_eval(trained, which):
  config, workdir, _ = trained
  history = {h["step"]: h for h in map(json.loads, open(os.path.join(workdir,
                                                                     "eval_history.jsonl")))}
  config = config.copy_and_resolve_references()
  config.eval.checkpoint = which
  out = evaluate.evaluate_workdir(config, workdir)
  expected = history[out["step"]]
  for k in ("mIoU", "mAcc", "aAcc"):
    assert out[k] == pytest.approx(expected[k], abs=1e-6), k
  assert os.path.exists(os.path.join(workdir, f"eval_step{out['step']}.json"))
  if which == "best":
    assert expected["mIoU"] == max(h["mIoU"] for h in history.values())


def test_evaluate_at_other_batch_size_and_mode_counts_all_images(trained):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.eval.batch_size = 16  # 12 images: one padded batch
  out = evaluate.evaluate_workdir(config, workdir)
  assert out["num_images"] == 12
  config.eval.mode = "slide"
  slide = evaluate.evaluate_workdir(config, workdir)
  assert slide["num_images"] == 12 and 0 <= slide["mIoU"] <= 1


def test_checkpoint_of_another_model_is_refused(trained):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.model.decode_head.channels = 24
  with pytest.raises(CheckpointError, match=r"checkpoints/6: parameter '\w+/decode_head/.*' "
                                            r"has shape \(16,\) in the checkpoint but \(24,\)"):
    evaluate.evaluate_workdir(config, workdir)
  config.model.decode_head.channels = 16
  config.model.backbone["depths"] = (2, 1, 1, 1)
  with pytest.raises(CheckpointError, match=r"lacks 22 parameter\(s\) of the model, first "
                                            r"'params/backbone/block0_1"):
    evaluate.evaluate_workdir(config, workdir)


def test_init_from_loads_params_and_starts_at_step_0(trained, tmp_path):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.init_from = workdir
  config.train.num_steps = 1
  config.train.eval_every = 100
  train.train_and_evaluate(config, str(tmp_path))
  assert ckpt_lib.Checkpointer(str(tmp_path)).latest_step() == 1


def test_segmenter_and_predict_mode(trained, tmp_path):
  config, workdir, _ = trained
  seg = Segmenter.from_workdir(workdir)
  assert seg.class_names == ("background", "disc", "square", "triangle", "ring")
  source = data_lib.build_source(config.data, "val")
  images = np.stack([source.load(i)[0] for i in range(3)])
  logits = seg.logits(images)
  assert logits.shape == images.shape[:3] + (5,)
  assert seg.logits(images, resize_to_input=False).shape == (3, 48, 48, 5)  # the test size
  np.testing.assert_array_equal(seg.predict(images), logits.argmax(-1))
  with pytest.raises(ValueError, match="uint8 images"):
    seg.predict(images.astype(np.float32))

  os.makedirs(tmp_path / "in")
  for i, im in enumerate(images):
    Image.fromarray(im[:40, :45]).save(tmp_path / "in" / f"photo{i}.jpg")  # odd sizes
  config = config.copy_and_resolve_references()
  config.predict.input = str(tmp_path / "in")
  config.predict.output = str(tmp_path / "out")
  predict.predict_folder(config, workdir)
  for i in range(3):
    for kind in ("label", "color", "overlay"):
      path = tmp_path / "out" / f"photo{i}_{kind}.png"
      assert path.exists(), path
    label = np.asarray(Image.open(tmp_path / "out" / f"photo{i}_label.png"))
    photo = np.asarray(Image.open(tmp_path / "in" / f"photo{i}.jpg"))
    np.testing.assert_array_equal(label, seg.predict(photo[None])[0])  # predict == Segmenter
    assert label.shape == (40, 45) and label.max() < 5


def test_multi_scale_flip_inference(trained):
  config, workdir, _ = trained
  seg = Segmenter.from_workdir(workdir)
  images = np.stack([data_lib.build_source(config.data, "val").load(i)[0] for i in range(2)])
  x = (images.astype(np.float32) - np.array(config.data.mean)) / np.array(config.data.std)
  cfg = config.eval.copy_and_resolve_references()
  base = evaluate.make_logits_fn(seg.model, cfg, 5)
  cfg.scales, cfg.flip = (1.0, 0.5), True
  tta = evaluate.make_logits_fn(seg.model, cfg, 5)(seg.variables, jnp.asarray(x))
  probs = []
  for s in (1.0, 0.5):
    small = jax.image.resize(jnp.asarray(x), (2, int(48 * s), int(48 * s), 3), "bilinear",
                             antialias=False)
    for flip in (False, True):
      view = small[:, :, ::-1] if flip else small
      out = base(seg.variables, view)
      out = out[:, :, ::-1] if flip else out
      out = jax.image.resize(out, (2, 48, 48, 5), "bilinear", antialias=False)
      probs.append(jax.nn.softmax(out, -1))
  np.testing.assert_allclose(np.exp(tta), np.mean(probs, 0), atol=1e-5)
  config = config.copy_and_resolve_references()
  config.eval.scales, config.eval.flip = (0.75, 1.0), True
  out = evaluate.evaluate_workdir(config, workdir)
  # Evaluate mode with TTA scores exactly what Segmenter predicts image by image.
  tta_seg = Segmenter(config, seg.variables)
  source = data_lib.build_source(config.data, "val")
  cm = np.zeros((5, 5), np.int64)
  for i in range(len(source)):
    image, label = source.load(i)
    keep = label != 255
    np.add.at(cm, (label[keep], tta_seg.predict(image[None])[0][keep]), 1)
  assert out["num_images"] == 12
  np.testing.assert_array_equal(out["confusion_matrix"], cm)


def test_cnn_recipe_learns_with_sgd_and_supervises_every_output(test_config):
  """A tiny DANet (ResNet-18 at 1/8 width, the danet_r50_d8_city recipe: SGD, poly 0.9,
  auxiliary FCN head): the train step reports the main loss and one per auxiliary output
  (DANet's pam and cam, then the FCN head), their weighted sum is the loss, and it learns."""
  recipe = load_config("danet_r50_d8_city")
  model = recipe.model.to_dict()
  model["backbone"].update(name="resnet", depth=18, stem_channels=16, base_channels=8)
  model["decode_head"].update(channels=16, pam_channels=8)
  model["auxiliary_head"][0].update(channels=8)
  test_config.model = model
  test_config.optim = recipe.optim
  test_config.optim.lr = 0.05
  test_config.train.batch_size = 16
  mesh = parallel.make_mesh()
  state, step = make_state_and_step(test_config, mesh,
                                    lambda p: optim.make_optimizer(test_config.optim, p, 30))
  source = data_lib.build_source(test_config.data, "train")
  batches = pipeline.train_batches(source, test_config.data, seed=0, global_batch=16)
  losses = []
  for _ in range(30):
    state, m = step(state, parallel.global_batch(next(batches), mesh), jax.random.key(0))
    losses.append(float(m["loss"]))
  parts = {k: float(v) for k, v in m.items() if k.startswith("loss_")}
  assert sorted(parts) == ["loss_aux0", "loss_aux1", "loss_aux2", "loss_main"]
  assert float(m["loss"]) == pytest.approx(
      parts["loss_main"] + parts["loss_aux0"] + parts["loss_aux1"] + 0.4 * parts["loss_aux2"],
      rel=1e-5)
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


class _Layered(__import__("flax").linen.Module):
  """A toy backbone with mmseg-style layer ids: embed 0, block i -> i + 1, norm unscaled."""

  @__import__("flax").linen.compact
  def __call__(self, x):
    import flax.linen as nn
    x = nn.Dense(2, name="embed")(x)
    for i in range(3):
      x = nn.Dense(2, name=f"block{i}")(x)
    return nn.LayerNorm(name="norm")(x)

  def layer_id(self, path, num_layers, decay_type):
    del decay_type
    if path.startswith("embed"):
      return 0
    if path.startswith("block"):
      return int(path[5]) + 1
    return num_layers + 1


def test_layer_wise_lr_decay_scales_each_backbone_layer(test_config):
  cfg = test_config.optim
  cfg.update(layer_decay_rate=0.5, layer_decay_num_layers=3, lr_mults=(("^decode_head", 10.0),))
  backbone = _Layered()
  params = {"backbone": backbone.init(jax.random.key(0), jnp.zeros((1, 2)))["params"],
            "decode_head": {"classifier": {"kernel": jnp.ones((2, 2))}}}
  groups = optim.param_groups(params, cfg, backbone.layer_id)
  # rate ** (num_layers + 1 - id): embed 0.5^4, block i 0.5^(3 - i), norm and head unscaled.
  assert groups["backbone/embed/kernel"][0] == 0.0625
  assert [groups[f"backbone/block{i}/bias"][0] for i in range(3)] == [0.125, 0.25, 0.5]
  assert groups["backbone/norm/scale"] == (1.0, False)
  assert groups["decode_head/classifier/kernel"] == (10.0, True)
  # One SGD step (no momentum, no decay): each layer moves by its own lr x its gradient.
  cfg.update(name="sgd", momentum=0.0, weight_decay=0.0, warmup_steps=0, lr=1.0, end_lr=0.0)
  tx = optim.make_optimizer(cfg, params, 10, layer_id=backbone.layer_id)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(updates["backbone"]["embed"]["kernel"][0, 0]) == pytest.approx(-0.0625)
  assert float(updates["backbone"]["block1"]["kernel"][0, 0]) == pytest.approx(-0.25)
  assert float(updates["decode_head"]["classifier"]["kernel"][0, 0]) == pytest.approx(-10.0)
  with pytest.raises(ConfigError, match="backbone 'mit_b0' defines no layer ids"):
    optim.make_optimizer(cfg, params, 10, layer_id=None, backbone_name="mit_b0")
  cfg.layer_decay_type = "blockwise"
  with pytest.raises(ConfigError, match="optim.layer_decay_type"):
    optim.make_optimizer(cfg, params, 10, layer_id=backbone.layer_id)



def test_adam_couples_weight_decay_into_the_gradient_like_torch(test_config):
  """`adam` is torch.optim.Adam: decay joins the gradient and is normalised with it, so a
  zero gradient still moves a weight by a full first step (lr); adamw decays by lr * wd."""
  cfg = test_config.optim
  cfg.update(weight_decay=0.1, warmup_steps=0, lr=0.01, end_lr=0.0, lr_mults=(),
             no_decay=(), no_decay_norms=False)
  params = {"w": jnp.ones((3,))}
  zero = {"w": jnp.zeros((3,))}
  steps = {}
  for name in ("adam", "adamw"):
    cfg.name = name
    tx = optim.make_optimizer(cfg, params, 10)
    updates, _ = tx.update(zero, tx.init(params), params)
    steps[name] = float(updates["w"][0])
  assert steps["adam"] == pytest.approx(-0.01, rel=1e-4)
  assert steps["adamw"] == pytest.approx(-0.01 * 0.1, rel=1e-4)

def test_ema_of_weights_is_tracked_saved_and_evaluated(tmp_path):
  config = small_run_config(num_steps=4, eval_every=4, checkpoint_every=4)
  config.optim.ema_decay = 0.5
  mesh = parallel.make_mesh()
  state, step = make_state_and_step(config, mesh)
  source = data_lib.build_source(config.data, "train")
  batches = pipeline.train_batches(source, config.data, seed=0, global_batch=8)
  expected = jax.device_get(state.params)
  for _ in range(3):
    state, _ = step(state, parallel.global_batch(next(batches), mesh), jax.random.key(0))
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, expected, jax.device_get(state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               jax.device_get(state.ema["params"]), expected)
  assert not np.allclose(state.ema["params"]["decode_head"]["classifier"]["kernel"],
                         state.params["decode_head"]["classifier"]["kernel"])
  # A run saves the average with the model; evaluation, --mode=evaluate and Segmenter use it.
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  _, saved = params_of(workdir, config)
  assert set(saved) == {"params", "batch_stats", "ema"}
  out = evaluate.evaluate_workdir(config.copy_and_resolve_references(), workdir)
  assert out["mIoU"] == pytest.approx(results["mIoU"], abs=1e-6)
  seg = Segmenter.from_workdir(workdir)
  np.testing.assert_array_equal(seg.variables["params"]["decode_head"]["classifier"]["kernel"],
                                saved["ema"]["params"]["decode_head"]["classifier"]["kernel"])
  # init_from it into a run that keeps no average starts from the average (one frozen step).
  config = small_run_config(num_steps=1, eval_every=100, checkpoint_every=1)
  config.init_from = workdir
  config.optim.lr_mults = ((".*", 0.0),)
  train.train_and_evaluate(config, str(tmp_path / "finetune"))
  _, loaded = params_of(str(tmp_path / "finetune"), config)
  assert set(loaded) == {"params", "batch_stats"}
  jax.tree.map(np.testing.assert_array_equal, loaded["params"], saved["ema"]["params"])
