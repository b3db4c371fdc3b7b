"""The trainer: one straight-line `train_and_evaluate(config, workdir)`.

Read top to bottom: set-up, model and optimizer, restore (workdir -> init_from -> scratch),
the jitted step, the loop (log / checkpoint / evaluate / preemption), the end.
"""
import functools
import json
import signal
import time
from typing import Any, Dict, List

import flax
import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from PIL import Image

from segjax import checkpoint as ckpt_lib
from segjax import data as data_lib
from segjax import evaluate as eval_lib
from segjax import losses, models, optim, parallel, predict
from segjax.data import pipeline
from segjax.errors import ConfigError, TrainingDivergedError


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}


def make_train_step(model, tx, aux_weights):
  """train_step(state, batch, rng) -> (state, metrics), a pure function to jit."""

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      (logits, aux), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
          rngs={"dropout": rng}, mutable=["batch_stats"])
      loss, parts = losses.segmentation_loss(logits, aux, batch["label"], aux_weights)
      return loss, (updates, parts)

    (loss, (updates, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, opt_updates),
                              batch_stats=updates.get("batch_stats", {}), opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **parts}
    return new_state, metrics

  return train_step


def jit_train_step(model, tx, config, mesh, donate: bool = True):
  """make_train_step jitted over `mesh`: state and rng replicated, batch split on "data"."""
  aux_weights = [h["loss_weight"] for h in config.model.aux_heads]
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(make_train_step(model, tx, aux_weights), in_shardings=(rep, shard, rep),
                 out_shardings=(rep, rep), donate_argnums=(0,) if donate else ())


def init_state(model, config, mesh, tx_fn) -> TrainState:
  """Random initial state, created directly replicated over the mesh."""
  h, w = config.data.crop_size
  rep = parallel.replicated(mesh)

  @functools.partial(jax.jit, out_shardings=rep)
  def init(rng):
    variables = model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32), train=False)
    return variables["params"], variables.get("batch_stats", {})

  params, batch_stats = init(jax.random.key(config.seed))
  tx = tx_fn(params)
  opt_state = jax.jit(tx.init, out_shardings=rep)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), rep)
  return TrainState(step, params, batch_stats, opt_state), tx


def _mean_metrics(pending: List[Dict[str, jax.Array]], step: int) -> Dict[str, float]:
  """Host means of the metrics since the last flush; stops the run on NaN/inf."""
  fetched = jax.device_get(pending)
  means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  for i, m in enumerate(fetched):
    if not np.isfinite(m["loss"]):
      raise TrainingDivergedError(
          f"loss is {m['loss']} at step {step - len(fetched) + i + 1}; stopped without saving "
          "this state (the last checkpoint is intact). Lower optim.lr or set optim.grad_clip.")
  return means


def _install_sigterm_handler():
  """SIGTERM (TPU preemption, Slurm) -> save at the next step and exit cleanly."""
  flag = {"set": False}

  def handler(signum, frame):
    del frame
    logging.warning("received signal %d: checkpointing at the next step, then exiting", signum)
    flag["set"] = True

  try:
    signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread (e.g. called from a notebook worker)
    pass
  return flag


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains config's model in workdir (resuming if it holds a checkpoint); returns the last
  evaluation results."""
  # ---------------------------------------------------------------- set-up
  is_main = jax.process_index() == 0
  workdir_path = epath.Path(workdir)  # local or gs:// (pods need storage all hosts see)
  workdir_path.mkdir(parents=True, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
  num_steps = config.train.num_steps
  if num_steps <= 0:
    raise ConfigError(f"train.num_steps must be positive, got {num_steps}")
  train_source = data_lib.build_source(config.data, config.data.train_split)
  eval_source = data_lib.build_source(config.data, config.data.eval_split)
  if is_main:
    (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  logging.info("%d devices on %d host(s); %d train / %d eval images (%s)", jax.device_count(),
               jax.process_count(), len(train_source), len(eval_source), config.data.name)

  # ---------------------------------------------------------------- model and optimizer
  model = models.build_model(config)
  schedule = optim.warmup_poly_schedule(config.optim, num_steps)
  state, tx = init_state(model, config, mesh,
                         lambda params: optim.make_optimizer(config.optim, params, num_steps))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("model %s/%s: %s parameters", config.model.name,
               config.model.get("backbone", {}).get("name", "-"), f"{num_params:,}")

  # ---------------------------------------------------------------- restore
  checkpointer = ckpt_lib.Checkpointer(workdir, config.train.max_to_keep,
                                       config.train.async_checkpoint)
  start_step = checkpointer.latest_step() or 0
  if start_step:
    _, variables = checkpointer.restore_model(start_step, state.variables)
    opt_state = checkpointer.restore_train(start_step, {"opt_state": state.opt_state})
    state = state.replace(step=jax.device_put(jnp.int32(start_step), parallel.replicated(mesh)),
                          opt_state=opt_state["opt_state"], **variables)
    logging.info("resumed from %s at step %d", checkpointer.latest.directory, start_step)
  elif config.init_from:
    source = ckpt_lib.Checkpointer(config.init_from, read_only=True)
    step, variables = source.restore_model("latest", state.variables, allow_missing=True)
    state = state.replace(**variables)
    source.close()
    logging.info("initialised from %s (step %d)", config.init_from, step)
  else:
    logging.info("training from scratch")
  best_miou = checkpointer.best_miou()

  # ---------------------------------------------------------------- compiled functions
  train_step = jit_train_step(model, tx, config, mesh)
  evaluator = eval_lib.Evaluator(model, config, mesh, eval_source)
  dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  palette = data_lib.palette(config.data)

  def run_eval(step):
    results, kept = evaluator(state.variables, num_keep=config.train.num_overlays)
    logging.info("eval step %d: mIoU %.4f  mAcc %.4f  aAcc %.4f  (%d images, %.1fs)", step,
                 results["mIoU"], results["mAcc"], results["aAcc"], results["num_images"],
                 results["seconds"])
    writer.write_scalars(step, {f"eval/{k}": results[k] for k in ("mIoU", "mAcc", "aAcc")})
    if is_main:
      eval_lib.write_results(workdir_path / "eval_results.json", step, results,
                             eval_source.class_names)
      history = workdir_path / "eval_history.jsonl"  # rewritten whole: gs:// has no append
      line = json.dumps({"step": step, **{k: results[k] for k in ("mIoU", "mAcc", "aAcc")}})
      history.write_text((history.read_text() if history.exists() else "") + line + "\n")
      if kept:
        panels = [predict.panel(img, lab, pred, palette) for img, lab, pred in kept]
        writer.write_images(step, {"eval/image_gt_pred": np.stack(panels)})
        (workdir_path / "overlays").mkdir(exist_ok=True)
        for i, p in enumerate(panels):
          with (workdir_path / "overlays" / f"step{step}_{i}.png").open("wb") as f:
            Image.fromarray(p).save(f, format="PNG")
    return results

  # ---------------------------------------------------------------- loop
  batches = pipeline.train_batches(
      train_source, config.data, seed=config.seed, global_batch=config.train.batch_size,
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())
  preempt = _install_sigterm_handler()
  pending: List[Dict[str, jax.Array]] = []
  results: Dict[str, Any] = {}
  last_time, last_step = time.time(), start_step
  if start_step >= num_steps:
    logging.warning("%s already holds step %d >= train.num_steps=%d; nothing to train "
                    "(raise --config.train.num_steps to continue)", workdir, start_step, num_steps)
  else:
    logging.info("training steps %d..%d, global batch %d", start_step + 1, num_steps,
                 config.train.batch_size)
  try:
    for step in range(start_step + 1, num_steps + 1):
      batch = parallel.global_batch(next(batches), mesh)
      state, metrics = train_step(state, batch, dropout_rng)
      pending.append(metrics)
      if step == start_step + 1:  # the first step compiles; keep it out of images/s
        jax.block_until_ready(state.step)
        logging.info("first step (compile included) took %.1fs", time.time() - last_time)
        last_time, last_step = time.time(), step

      # Multi-host: every host must agree on the step to save at, so use JAX's preemption sync
      # point (SIGTERM reaches the hosts at different times); one host: the local flag.
      preempted = (checkpointer.latest.reached_preemption(step) if jax.process_count() > 1
                   else preempt["set"])
      last = step == num_steps
      do_log = step % config.train.log_every == 0 or last
      do_ckpt = step % config.train.checkpoint_every == 0 or last or preempted
      do_eval = step % config.train.eval_every == 0 or last
      if pending and (do_log or do_ckpt or do_eval):
        means = _mean_metrics(pending, step)  # raises on NaN before anything is saved
        pending = []
        if do_log:
          now = time.time()
          rate = (step - last_step) * config.train.batch_size / max(now - last_time, 1e-9)
          eta = (num_steps - step) * config.train.batch_size / max(rate, 1e-9)
          lr = float(schedule(step - 1))  # the rate this step's update used
          logging.info("step %d/%d  loss %.4f  lr %.2e  %.1f img/s  ETA %s", step, num_steps,
                       means["loss"], lr, rate, _format_eta(eta))
          writer.write_scalars(step, {**{f"train/{k}": v for k, v in means.items()},
                                      "train/lr": lr, "train/images_per_sec": rate})
          last_time, last_step = now, step
      if do_ckpt:
        checkpointer.save(step, state.variables, config, state.opt_state, force=preempted)
      if do_eval:
        results = run_eval(step)
        if best_miou is None or results["mIoU"] > best_miou:
          best_miou = results["mIoU"]
          checkpointer.save_best(step, state.variables, config, best_miou)
        last_time, last_step = time.time(), step  # keep eval time out of images/s
      if preempted:
        logging.warning("preempted: checkpoint of step %d saved, exiting", step)
        break
  finally:  # also on NaN/kill: let in-flight async saves of good states finish
    checkpointer.wait()
    checkpointer.close()

  # ---------------------------------------------------------------- the end
  writer.flush()
  return results
