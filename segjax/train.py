"""The trainer: one straight-line `train_and_evaluate(config, workdir)`.

Read top to bottom: set-up, model and optimizer, restore (workdir -> init_from -> scratch),
the jitted step, the loop (log / checkpoint / evaluate / preemption), the end.
"""
import json
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

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
from segjax import workdir as workdir_lib
from segjax.data import pipeline
from segjax.errors import ConfigError, TrainingDivergedError, warn


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any = None  # {"params": moving average of params} when optim.ema_decay > 0

  @property
  def variables(self):
    """What a checkpoint's model item holds: params, batch_stats (and "ema")."""
    variables = {"params": self.params, "batch_stats": self.batch_stats}
    if self.ema is not None:
      variables["ema"] = self.ema
    return variables


def make_train_step(model, tx, aux_weights, ema_decay: float = 0.0, grad_accum: int = 1):
  """train_step(state, batch, rng) -> (state, metrics), a pure function to jit.

  grad_accum > 1 splits the batch into that many micro-batches, run one after the other in a
  `lax.scan` (one at a time in memory), and steps once on the mean of their losses' gradients
  (mmengine's `accumulative_counts`). That is the whole batch's update when the model has no
  BatchNorm and the loss is a mean over as many labelled pixels in each micro-batch (always
  so without ignored pixels, or with avg_non_ignore=False). Otherwise it is close, not
  equal: BatchNorm normalises each micro-batch by its own statistics and updates its running
  averages once per micro-batch, as k forward passes of PyTorch would; a micro-batch with
  fewer labelled pixels weighs as much as one with more; batch-level losses such as Dice or
  Lovász see one micro-batch at a time.
  Micro-batch j holds rows j, j + k, j + 2k, ... of the batch, so every device keeps its own
  rows: nothing moves between devices.
  """

  def loss_fn(params, batch_stats, image, label, rng):
    (logits, aux), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, image, train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    if hasattr(model, "training_loss"):  # a model with its own criterion (MaskFormer's)
      loss, parts = model.training_loss(logits, aux, label)
    else:
      loss, parts = losses.segmentation_loss(logits, aux, label, aux_weights,
                                             getattr(model, "output_losses", ()),
                                             getattr(model, "align_corners", ()))
    return loss, (updates.get("batch_stats", {}), parts)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulated_grads(state, batch, rng):
    k = grad_accum

    def micro(x):  # (B, ...) -> (k, B/k, ...): micro-batch j = rows j, j + k, ...
      return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

    def one(carry, xs):
      batch_stats, grads_sum = carry
      j, image, label = xs
      (loss, (batch_stats, parts)), grads = grad_fn(
          state.params, batch_stats, image, label, jax.random.fold_in(rng, j))
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (batch_stats, grads_sum), (loss, parts)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (batch_stats, grads_sum), (loss, parts) = jax.lax.scan(
        one, (state.batch_stats, zeros),
        (jnp.arange(k), micro(batch["image"]), micro(batch["label"])))
    grads = jax.tree.map(lambda g: g / k, grads_sum)
    return jnp.mean(loss), batch_stats, jax.tree.map(jnp.mean, parts), grads

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if grad_accum == 1:
      (loss, (batch_stats, parts)), grads = grad_fn(
          state.params, state.batch_stats, batch["image"], batch["label"], rng)
    else:
      loss, batch_stats, parts, grads = accumulated_grads(state, batch, rng)
    opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, opt_updates)
    ema = state.ema
    if ema is not None:
      ema = {"params": jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                                    ema["params"], params)}
    new_state = state.replace(step=state.step + 1, params=params, ema=ema,
                              batch_stats=batch_stats, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **parts}
    return new_state, metrics

  return train_step


def jit_train_step(model, tx, config, mesh, state_sharding=None, donate: bool = True):
  """make_train_step jitted over `mesh`: the batch split over every device, the rng and
  metrics replicated, the state as `state_sharding` (a tree of shardings, e.g. the
  `state_shardings` of init_state's state; None = replicated)."""
  aux_weights = model.aux_loss_weights  # one per auxiliary output (segjax.models.segmentor)
  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  state_sharding = rep if state_sharding is None else state_sharding
  step_fn = make_train_step(model, tx, aux_weights, config.optim.get("ema_decay", 0.0),
                            config.train.get("grad_accum", 1))
  return jax.jit(step_fn, in_shardings=(state_sharding, shard, rep),
                 out_shardings=(state_sharding, rep), donate_argnums=(0,) if donate else ())


def state_shardings(state: TrainState) -> TrainState:
  """The shardings of a state's arrays (what init_state placed, and restores keep)."""
  return jax.tree.map(lambda x: x.sharding, state)


def optimizer_for(model, config, num_steps: int):
  """params -> config.optim's optimizer, with the backbone's layer-id rule (layer decay)."""
  backbone = getattr(model, "backbone", None)
  return lambda params: optim.make_optimizer(
      config.optim, params, num_steps, layer_id=getattr(backbone, "layer_id", None),
      backbone_name=config.model.get("backbone", {}).get("name", "-"))


def init_state(model, config, mesh, tx_fn) -> TrainState:
  """Random initial state, created directly on the mesh: replicated, or with parallel.fsdp > 1
  its large arrays split over the fsdp axis (parallel.state_shardings), never whole on one
  device."""
  shape = eval_lib.input_shape(config)  # (1, h, w, 3) images, (1, d, h, w, 1) volumes
  rep = parallel.replicated(mesh)

  def init(rng):
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

  rng = jax.random.key(config.seed)
  placed = parallel.state_shardings(jax.eval_shape(init, rng), mesh, config)
  variables = jax.jit(init, out_shardings=placed)(rng)
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = tx_fn(params)
  opt_state = jax.jit(tx.init, out_shardings=parallel.state_shardings(
      jax.eval_shape(tx.init, params), mesh, config))(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), rep)
  ema = None
  if config.optim.get("ema_decay", 0.0) > 0:  # a copy (its own buffers: the state is donated)
    ema = {"params": jax.jit(lambda p: jax.tree.map(lambda x: x * 1, p),
                             out_shardings=placed["params"])(params)}
  return TrainState(step, params, batch_stats, opt_state, ema), tx


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


class StopSignals:
  """SIGTERM (TPU preemption, Slurm) and Ctrl-C (SIGINT): checkpoint at the next step, exit.

  One process: a Python handler sets a flag. Several processes: the hosts must agree on the
  step to save at, so the request goes through JAX's preemption sync point, whose notifier
  owns SIGTERM in C++. A Python SIGTERM handler would replace that notifier and no host would
  ever see the preemption, so none is installed then; Ctrl-C is forwarded to the notifier as
  a SIGTERM to this process. A second Ctrl-C exits at once: orbax commits a checkpoint by
  renaming a finished temporary directory, so no finished checkpoint can be damaged by it.
  """

  def __init__(self, multi_host: bool):
    self.multi_host = multi_host
    self.requested = False
    self._previous = {}

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      print("error: interrupted twice: exiting now without a checkpoint of this step (the last "
            "finished checkpoint is intact)", file=sys.stderr, flush=True)
      os._exit(130)
    name = signal.Signals(signum).name
    logging.warning("received %s: checkpointing at the next step, then exiting (Ctrl-C again "
                    "to exit at once)", name)
    self.requested = True
    if self.multi_host and signum == signal.SIGINT:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier: all hosts stop at one step

  def __enter__(self):
    signums = [signal.SIGINT] + ([] if self.multi_host else [signal.SIGTERM])
    try:
      for signum in signums:
        self._previous[signum] = signal.signal(signum, self._on_signal)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handlers
      pass
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def reached(self, step: int, checkpointer: ckpt_lib.Checkpointer) -> bool:
    """Whether to save at `step` and stop; on several hosts, the same step on every host."""
    if self.multi_host:
      return checkpointer.latest.reached_preemption(step)
    return self.requested


# Fields that shape the training trajectory: resuming with another value is a different run.
# Paths that may move and evaluation-only or speed-only fields are free to change.
TRAJECTORY_FIELDS = ("seed", "data", "model", "optim", "train.batch_size")
FREE_FIELDS = ("data.root", "data.tfds_dir", "data.eval_split", "data.eval_size",
               "data.num_parallel_calls",
               "data.synthetic_eval_size")


def _fields(tree, prefix="") -> Dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}; lists and tuples are values (JSON makes tuples lists)."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_fields(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: json.loads(json.dumps(tree))}


def check_resume_config(saved: Dict[str, Any], config: ml_collections.ConfigDict, step: int,
                        source: str) -> None:
  """Refuses a resume whose config changes the trajectory (unless train.allow_config_changes),
  and says so when a changed train.num_steps moves the poly schedule's lr."""
  old, new = _fields(saved), _fields(config.to_dict())
  changed = [k for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k) and k.startswith(TRAJECTORY_FIELDS)
             and not k.startswith(FREE_FIELDS)]
  if changed and not config.train.allow_config_changes:
    listed = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})"
                       for k in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise ConfigError(
        f"the config differs from the one saved in {source} in fields that change training: "
        f"{listed}{more}; use a new --workdir, or --config.train.allow_config_changes=True to "
        "continue this run with them")
  old_steps = saved.get("train", {}).get("num_steps")
  new_steps = config.train.num_steps
  if old_steps is not None and old_steps != new_steps and step < new_steps:
    old_optim = ml_collections.ConfigDict(saved.get("optim", config.optim.to_dict()))
    was = float(optim.warmup_poly_schedule(old_optim, old_steps)(min(step, old_steps) - 1))
    now = float(optim.warmup_poly_schedule(config.optim, config.train.num_steps)(step))
    warn(f"train.num_steps changed {old_steps} -> {config.train.num_steps}: the poly schedule "
         f"is stretched to the new length, so the lr goes from {was:.2e} (step {step}) to "
         f"{now:.2e} (step {step + 1})")


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _results_step(path) -> Optional[int]:
  """The step of an eval_results.json, None when there is none (or it is unreadable)."""
  try:
    return int(json.loads(path.read_text())["step"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains config's model in workdir (resuming if it holds a checkpoint); returns the last
  evaluation results."""
  # ---------------------------------------------------------------- set-up
  is_main = jax.process_index() == 0
  # Local or gs:// (pods need storage all hosts see). Writable and ours before anything else.
  workdir_path = workdir_lib.ensure_writable(workdir) if is_main else epath.Path(workdir)
  lock = workdir_lib.RunLock(workdir, config.train.lock_stale_after)
  if is_main:
    lock.acquire()
  try:
    return _train(config, workdir, workdir_path)
  finally:
    lock.release()


def _train(config, workdir, workdir_path) -> Dict[str, Any]:
  is_main = jax.process_index() == 0
  mesh = parallel.mesh_for(config)
  grad_accum = config.train.get("grad_accum", 1)
  if grad_accum < 1:
    raise ConfigError(f"train.grad_accum must be >= 1, got {grad_accum}")
  if config.train.batch_size % grad_accum:
    raise ConfigError(f"train.batch_size={config.train.batch_size} must be a multiple of "
                      f"train.grad_accum={grad_accum}")
  parallel.check_batch_size(config.train.batch_size // grad_accum, mesh,
                            f"train.batch_size / train.grad_accum ({grad_accum})")
  num_steps = config.train.num_steps
  if num_steps <= 0:
    raise ConfigError(f"train.num_steps must be positive, got {num_steps}")
  train_source = data_lib.build_source(config.data, config.data.train_split)
  eval_source = data_lib.build_source(config.data, config.data.eval_split)
  logging.info("%d devices on %d host(s); %d train / %d eval images (%s)", jax.device_count(),
               jax.process_count(), len(train_source), len(eval_source), config.data.name)

  # ---------------------------------------------------------------- model and optimizer
  model = models.build_model(config)
  schedule = optim.warmup_poly_schedule(config.optim, num_steps)
  state, tx = init_state(model, config, mesh, optimizer_for(model, config, num_steps))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("model %s/%s: %s parameters", config.model.name,
               config.model.get("backbone", {}).get("name", "-"), f"{num_params:,}")
  if mesh.shape[parallel.FSDP_AXIS] > 1:
    leaves = jax.tree.leaves(state)
    split = [x for x in leaves if not x.sharding.is_fully_replicated]
    per_device = sum(x.addressable_shards[0].data.nbytes for x in leaves)
    logging.info("fsdp: mesh %s; %d of %d state arrays (%.0f%% of the elements) split %d ways; "
                 "%.1f MiB of state per device", dict(mesh.shape), len(split), len(leaves),
                 100 * sum(x.size for x in split) / max(1, sum(x.size for x in leaves)),
                 mesh.shape[parallel.FSDP_AXIS], per_device / 2 ** 20)

  # ---------------------------------------------------------------- restore
  # Everything is checked before the first write: a resume with the wrong config or a
  # checkpoint of another model leaves the workdir exactly as it was.
  checkpointer = ckpt_lib.Checkpointer(workdir, config.train.max_to_keep,
                                       config.train.async_checkpoint)
  resumed = checkpointer.restore_for_resume(state.variables, state.opt_state)
  start_step = 0
  if resumed:
    check_resume_config(resumed.config, config, resumed.step,
                        str(checkpointer.latest.directory / str(resumed.step)))
    checkpointer.set_aside_damaged(resumed)  # the first write, after every check
    start_step = resumed.step
    state = state.replace(step=jax.device_put(jnp.int32(start_step), parallel.replicated(mesh)),
                          opt_state=resumed.opt_state, **resumed.variables)
    logging.info("resumed from %s at step %d", checkpointer.latest.directory, start_step)
  elif config.init_from:
    source = ckpt_lib.Checkpointer(config.init_from, read_only=True)
    # The run starts from the weights the checkpoint evaluates with: its average of the
    # weights where it kept one (optim.ema_decay), whether or not this run keeps one.
    target = {**state.variables, "ema": {"params": state.params}}
    if "ema" not in source.saved_collections("latest"):
      del target["ema"]
    step, variables = source.restore_model("latest", target, allow_missing=True)
    if "ema" in variables:
      variables = {**variables, "params": variables["ema"]["params"]}
    state = state.replace(**{k: v for k, v in variables.items() if k != "ema"})
    if state.ema is not None:  # the average starts from the loaded weights
      state = state.replace(ema={"params": jax.jit(lambda p: jax.tree.map(lambda x: x * 1, p))(
          state.params)})
    source.close()
    logging.info("initialised from %s (step %d)", config.init_from, step)
  else:
    logging.info("training from scratch")
  best_miou = checkpointer.best_miou()
  history = workdir_lib.EvalHistory(workdir)
  if is_main:
    history.rollback(start_step)  # evaluations past the resumed step belong to a lost future
    workdir_lib.atomic_write_text(workdir_path / "config.json",
                                  config.to_json_best_effort(indent=2))
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)

  # ---------------------------------------------------------------- compiled functions
  train_step = jit_train_step(model, tx, config, mesh, state_shardings(state))
  evaluator = eval_lib.Evaluator(model, config, mesh, eval_source)
  dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  palette = data_lib.palette(config.data)

  def run_eval(step):
    results, kept = evaluator(eval_lib.inference_variables(state.variables),
                              num_keep=config.train.num_overlays)
    logging.info("eval step %d: mIoU %.4f  mDice %.4f  mAcc %.4f  aAcc %.4f  (%d images, "
                 "%.1fs)", step, results["mIoU"], results["mDice"], results["mAcc"],
                 results["aAcc"], results["num_images"], results["seconds"])
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()
                                if isinstance(v, float) and k != "seconds"})
    if is_main:
      eval_lib.write_results(workdir_path / "eval_results.json", step, results,
                             eval_source.class_names)
      eval_lib.log_results(step, results, eval_source.class_names)
      history.add(step, {k: results[k] for k in ("mIoU", "mAcc", "aAcc")})
      if kept:
        panels = [predict.panel(img, lab, pred, palette) for img, lab, pred in kept]
        # One image per key: panels keep their images' own sizes (evaluation does not pad).
        writer.write_images(step, {f"eval/image_gt_pred_{i}": p[None]
                                   for i, p in enumerate(panels)})
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
  pending: List[Dict[str, jax.Array]] = []
  results: Dict[str, Any] = {}
  last_time, last_step = time.time(), start_step
  if start_step >= num_steps:
    logging.warning("%s already holds step %d >= train.num_steps=%d; nothing to train "
                    "(raise --config.train.num_steps to continue)", workdir, start_step, num_steps)
    if _results_step(workdir_path / "eval_results.json") != start_step:
      # Stopped between the last checkpoint and its evaluation (a kill during the final
      # eval): evaluate it now, so a finished run always ends with its own results.
      results = run_eval(start_step)
  else:
    logging.info("training steps %d..%d, global batch %d", start_step + 1, num_steps,
                 config.train.batch_size)
  stop = StopSignals(multi_host=jax.process_count() > 1)
  previous_metrics = None
  try:
    with stop:
      for step in range(start_step + 1, num_steps + 1):
        batch = parallel.global_batch(next(batches), mesh)
        state, metrics = train_step(state, batch, dropout_rng)
        pending.append(metrics)
        # At most two steps in flight: the devices compute step n while Python waits for n-1.
        # Unbounded, Python would queue every step up to the next metric fetch (log_every
        # steps ahead), and a stop request would be acted on only after all of them ran.
        if previous_metrics is not None:
          jax.block_until_ready(previous_metrics)
        previous_metrics = metrics
        if step == start_step + 1:  # the first step compiles; keep it out of images/s
          jax.block_until_ready(state.step)
          logging.info("first step (compile included) took %.1fs", time.time() - last_time)
          last_time, last_step = time.time(), step

        preempted = stop.reached(step, checkpointer)
        last = step == num_steps
        do_log = step % config.train.log_every == 0 or last
        do_ckpt = step % config.train.checkpoint_every == 0 or last or preempted
        do_eval = step % config.train.eval_every == 0 or last
        if pending and (do_log or do_ckpt or do_eval):
          means = _mean_metrics(pending, step)  # raises on NaN before anything is saved
          pending = []
          checkpointer.check_for_errors()  # a failed async save stops the run right here
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
          checkpointer.wait()
          logging.warning("stop requested: checkpoint of step %d saved, exiting", step)
          break
      checkpointer.wait()  # a save that fails at the very end is still reported
  except BaseException:  # NaN, a failed save, a kill: let in-flight saves of good states end
    checkpointer.wait(raise_errors=False)
    raise
  finally:
    checkpointer.close()

  # ---------------------------------------------------------------- the end
  writer.flush()
  return results
