"""Checkpoints: orbax managers for the latest N steps and for the best step by mIoU.

Layout of a workdir:
  checkpoints/<step>/{model,train,config}   latest `max_to_keep` steps (async saves)
  checkpoints_best/<step>/{model,config}    the step with the highest eval mIoU
where `model` = {"params", "batch_stats"}, `train` = {"opt_state"} and `config` is the
experiment's ConfigDict as JSON. Evaluation and `init_from` read only `model`, so a converted
PyTorch checkpoint (model + config, no optimizer) is a valid checkpoint too.

Before any restore the saved shapes are compared with the model's, so a checkpoint from
another model fails with the first mismatched parameter named instead of an orbax trace.

Damage (a truncated or missing file, e.g. from a partial copy between buckets) is found by
reading: any failure to read a step becomes one `DamagedCheckpointError` naming its directory.
Training resume (`restore_for_resume`) then falls back to the newest intact step, and, once
the trainer has accepted it, `set_aside_damaged` moves the damaged ones to
`checkpoints_damaged/` (kept, never deleted) so later saves of those step numbers do not
collide with them. A failed save (disk full, no permission) becomes one
`CheckpointError` naming the path; orbax writes each step to a temporary directory and
renames it only when complete, so the previous checkpoint stays restorable.
"""
import contextlib
import gc
import sys
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from segjax import parallel
from segjax.errors import CheckpointError, DamagedCheckpointError, warn

MODEL, TRAIN, CONFIG = "model", "train", "config"
LATEST_DIR, BEST_DIR, DAMAGED_DIR = "checkpoints", "checkpoints_best", "checkpoints_damaged"


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey (namedtuple field), SequenceKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten(tree) -> Dict[str, Any]:
  """{"a": {"b": x}} -> {"a/b": x}, with sequence indices and namedtuple fields as path parts,
  so a checkpoint's metadata tree (dicts and lists) and a live pytree (optax's namedtuples)
  flatten to the same keys. None and empty containers have no leaves."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def short_reason(e: BaseException, limit: int = 200) -> str:
  """The first line of an exception's root cause (orbax wraps tensorstore's precise error in
  vaguer ones), for a one-line message. Longer than `limit`, its middle is cut: tensorstore
  puts what failed first and the OS error (e.g. "File too large") last."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = (str(e).strip().splitlines() or [type(e).__name__])[0]
  if len(text) <= limit:
    return text
  head = limit // 2
  return f"{text[:head]} ... {text[-(limit - head - 5):]}"


@contextlib.contextmanager
def _reading(directory, hint: str = ""):
  """Turns any failure to read the checkpoint in `directory` into one DamagedCheckpointError
  (user errors such as a shape mismatch pass through unchanged)."""
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # orbax/tensorstore raise ValueError, OSError, RuntimeError, ...
    gc.collect()  # orbax's abandoned coroutines, while the filter is in place
    raise DamagedCheckpointError(
        f"{directory}: checkpoint is unreadable or incomplete ({short_reason(e)}){hint}"
    ) from e


def _is_orbax_echo(unraisable) -> bool:
  """Whether an unraisable exception is an echo of a checkpoint read/write failure that is
  reported as one error line anyway: orbax's un-awaited coroutines ("Exception ignored in
  <coroutine ...>") and tensorstore callbacks into an asyncio loop that orbax already closed
  ("RuntimeError: Event loop is closed", one per array: the issue's 51 tracebacks)."""
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and "/orbax/" in code.co_filename:
    return True
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


def _drop_orbax_echoes() -> None:
  """Installs (once) an unraisable-exception hook without those echoes; every other
  unraisable exception still reaches the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "segjax_filter", False):
    return

  def hook(unraisable):
    if not _is_orbax_echo(unraisable):
      previous(unraisable)

  hook.segjax_filter = True
  sys.unraisablehook = hook
  warnings.filterwarnings("ignore", category=RuntimeWarning,
                          message="coroutine '_read_array_index_and_device_put' was never")


# orbax splits each replicated array over the replicas so that they write in parallel. For
# small arrays that is one eager slice (traced, lowered and compiled) per array and replica:
# the first save of the tiny test model on 8 CPU devices took 12.5 s, and 0.33 s when only
# slices of at least 1 MiB are split. Arrays large enough to profit are still split.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _configure_orbax() -> None:
  """Registers the jax.Array handler above in orbax's global registry (quietly: the public
  register_type_handler logs a warning on every override)."""
  from orbax.checkpoint._src.serialization import type_handler_registry as registry
  registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(
      jax.Array, ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES),
      override=True, ignore_warnings=True)


class Resumed(NamedTuple):
  """What `restore_for_resume` found: the newest intact step and the damaged ones above it."""
  step: int
  variables: Any
  opt_state: Any
  config: Dict[str, Any]  # the config saved with `step`
  damaged: List[int]  # newer steps that could not be read, for `set_aside_damaged`
  reasons: List[str]  # one DamagedCheckpointError message per damaged step


def check_compatible(saved: Dict[str, Any], target: Dict[str, Any], source: str,
                     allow_missing: bool = False, what: str = "parameter") -> None:
  """Raises CheckpointError naming the first key whose presence or shape differs.

  Args:
    saved: tree of objects with a `.shape` (orbax ArrayMetadata or arrays) from a checkpoint.
    target: tree of the model's arrays or ShapeDtypeStructs.
    source: the checkpoint path, for the message.
    allow_missing: accept target keys absent from `saved` (init_from of an encoder only).
    what: what a leaf is, for the message ("parameter", "optimizer state entry").
  """
  saved_flat, target_flat = flatten(saved), flatten(target)
  owner = "model" if what == "parameter" else "optimizer"
  hint = ("was it saved for another model (check config.model)?" if what == "parameter" else
          "was it saved with other optimizer settings (check config.optim, e.g. lr_mults, "
          "no_decay)?")
  unexpected = sorted(set(saved_flat) - set(target_flat))
  if unexpected:
    raise CheckpointError(
        f"{source}: checkpoint has {len(unexpected)} {what}(s) the {owner} lacks, first "
        f"'{unexpected[0]}'; {hint}")
  missing = sorted(set(target_flat) - set(saved_flat))
  if missing and not allow_missing:
    raise CheckpointError(
        f"{source}: checkpoint lacks {len(missing)} {what}(s) of the {owner}, first "
        f"'{missing[0]}'; {hint}")
  for key in sorted(saved_flat):
    s, t = tuple(saved_flat[key].shape), tuple(target_flat[key].shape)
    if s != t:
      raise CheckpointError(
          f"{source}: {what} '{key}' has shape {s} in the checkpoint but {t} in the {owner} "
          "(different variant or num_classes?)")


def _select(saved, target):
  """The leaves of `target` at the keys of `saved` (same nesting, empty dicts kept)."""
  if isinstance(saved, dict):
    return {k: _select(v, target[k]) for k, v in saved.items()}
  return target


def _merge(base, update):
  """Nested dict `base` with the leaves of `update` written over it."""
  out = dict(base)
  for k, v in update.items():
    out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
  return out


class Checkpointer:
  """Saves and restores the training state of one workdir (see module docstring)."""

  def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    """read_only: for evaluation/inference; creates no directories in a mistyped workdir."""
    # epath: local paths and gs:// alike (orbax writes through tensorstore).
    self.workdir = epath.Path(workdir)
    if "://" not in workdir:
      self.workdir = self.workdir.absolute()
    self.async_save = async_save
    self._saving: Optional[Tuple[str, int]] = None  # (directory, step) of an async save
    _drop_orbax_echoes()
    _configure_orbax()
    # Leftover temporary directories are saves that never finished (a kill mid-save): they
    # hold no committed checkpoint, and a later save of the same step would collide.
    options = dict(enable_async_checkpointing=async_save, create=not read_only,
                   cleanup_tmp_directories=not read_only)
    # Handlers are named up front so a fresh process can read metadata before any save.
    handlers = {MODEL: ocp.StandardCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}
    with self._writing(self.workdir, "open"):
      self.latest = ocp.CheckpointManager(
          self.workdir / LATEST_DIR,
          item_handlers={**handlers, TRAIN: ocp.StandardCheckpointHandler()},
          options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **options))
      self.best = ocp.CheckpointManager(
          self.workdir / BEST_DIR, item_handlers=dict(handlers),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: m["mIoU"], best_mode="max",
              keep_checkpoints_without_metrics=False, **options))

  # -- saving ------------------------------------------------------------------------------
  @contextlib.contextmanager
  def _writing(self, directory, what: str):
    """One CheckpointError naming the path for a failed save (disk full, no permission),
    including the failure of an earlier asynchronous save that surfaces only now."""
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:
      if self._saving is not None:  # the error belongs to the async save still in flight
        directory, step = self._saving
        what = f"save the checkpoint of step {step}"
      self._saving = None
      done = self.latest.latest_step() if hasattr(self, "latest") else None
      kept = (f"; the last finished checkpoint (step {done}) is intact" if done is not None
              else "")
      raise CheckpointError(f"{directory}: could not {what} ({short_reason(e)}){kept}") from e

  def save(self, step: int, model_vars, config: ml_collections.ConfigDict, opt_state=None,
           force: bool = False) -> None:
    """Saves model (+ optimizer state, unless None: converted weights have none)."""
    items = {MODEL: ocp.args.StandardSave(model_vars),
             CONFIG: ocp.args.JsonSave(config.to_dict())}
    if opt_state is not None:
      items[TRAIN] = ocp.args.StandardSave({"opt_state": opt_state})
    # orbax waits for the previous async save before starting this one anyway; waiting here
    # first names a failure of that save as its own, not as this step's.
    self.wait()
    directory = self.latest.directory / str(step)
    with self._writing(directory, f"save the checkpoint of step {step}"):
      self.latest.save(step, args=ocp.args.Composite(**items), force=force)
    if self.async_save:  # its failure can only surface later, at the next save or wait
      self._saving = (str(directory), step)

  def save_best(self, step: int, model_vars, config, miou: float) -> None:
    directory = self.best.directory / str(step)
    with self._writing(directory, f"save the best checkpoint of step {step}"):
      self.best.save(step, args=ocp.args.Composite(**{
          MODEL: ocp.args.StandardSave(model_vars),
          CONFIG: ocp.args.JsonSave(config.to_dict())}), metrics={"mIoU": float(miou)})

  def check_for_errors(self) -> None:
    """Raises the CheckpointError of a failed asynchronous save without waiting for it."""
    with self._writing(self.latest.directory, "save"):
      self.latest.check_for_errors()
      self.best.check_for_errors()

  def best_miou(self) -> Optional[float]:
    step = self.best.latest_step()
    if step is None:
      return None
    with _reading(self.best.directory / str(step)):
      return self.best.metrics(step)["mIoU"]

  def wait(self, raise_errors: bool = True) -> None:
    """Waits for async saves; raise_errors=False while another error is already on its way
    out (the save's failure is then only logged)."""
    try:
      with self._writing(self.latest.directory, "save"):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
    except CheckpointError as e:
      if raise_errors:
        raise
      logging.warning("%s", e)
    self._saving = None

  def close(self) -> None:
    self.latest.close()
    self.best.close()

  # -- restoring ---------------------------------------------------------------------------
  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def resolve(self, which: Union[str, int]) -> Tuple[ocp.CheckpointManager, int]:
    """Maps 'latest' | 'best' | a step number to (manager, step)."""
    if which == "best":
      mngr, step = self.best, self.best.latest_step()
    elif which == "latest":
      mngr, step = self.latest, self.latest.latest_step()
      if step is None:  # a workdir holding only a best checkpoint
        mngr, step = self.best, self.best.latest_step()
    else:
      try:
        step = int(which)
      except ValueError:
        raise CheckpointError(
            f"eval.checkpoint must be 'latest', 'best' or a step number, got {which!r}") from None
      mngr = self.latest if step in self.latest.all_steps() else self.best
      if step not in mngr.all_steps():
        raise CheckpointError(
            f"{self.workdir}: no checkpoint at step {step}; saved: {self.saved_steps()}")
    if step is None:
      raise CheckpointError(
          f"{self.workdir}: no checkpoint found (looked in {LATEST_DIR}/ and {BEST_DIR}/)")
    return mngr, step

  def saved_steps(self) -> List[int]:
    return sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))

  def _others_hint(self, step: int) -> str:
    others = [s for s in self.saved_steps() if s != step]
    return (f"; other saved steps: {others} (--config.eval.checkpoint=STEP)" if others else "")

  def saved_config(self, which: Union[str, int] = "latest") -> ml_collections.ConfigDict:
    mngr, step = self.resolve(which)
    with _reading(mngr.directory / str(step), self._others_hint(step)):
      return ml_collections.ConfigDict(self._read_config(mngr, step))

  def _read_config(self, mngr, step: int) -> Dict[str, Any]:
    cfg = mngr.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
    return dict(cfg[CONFIG])

  def restore_model(self, which: Union[str, int], target, allow_missing: bool = False):
    """Restores {"params", "batch_stats"} shaped like `target`; returns (step, vars).

    With allow_missing, target leaves the checkpoint lacks keep their value from `target`
    (which must then hold arrays, not shapes). An unreadable checkpoint is a
    DamagedCheckpointError naming its directory (evaluation never falls back silently).
    """
    mngr, step = self.resolve(which)
    with _reading(mngr.directory / str(step), self._others_hint(step)):
      return step, self._restore_model(mngr, step, target, allow_missing)

  def saved_collections(self, which: Union[str, int]) -> Tuple[str, ...]:
    """The collections ("params", "batch_stats", "ema") of a step's saved model."""
    mngr, step = self.resolve(which)
    with _reading(mngr.directory / str(step), self._others_hint(step)):
      return tuple(mngr.item_metadata(step)[MODEL].tree)

  def _restore_model(self, mngr, step: int, target, allow_missing: bool = False):
    source = str(epath.Path(mngr.directory) / str(step))
    saved = mngr.item_metadata(step)[MODEL].tree
    check_compatible(saved, target, source, allow_missing=allow_missing)
    abstract = jax.tree.map(_abstract, _select(saved, target))
    restored = mngr.restore(step, args=ocp.args.Composite(**{
        MODEL: ocp.args.StandardRestore(abstract)}))[MODEL]
    return _merge(target, restored) if allow_missing else restored

  def _restore_train(self, step: int, target):
    source = str(epath.Path(self.latest.directory) / str(step))
    saved = self.latest.item_metadata(step)[TRAIN].tree
    check_compatible(saved, target, source, what="optimizer state entry")
    restored = self.latest.restore(step, args=ocp.args.Composite(**{
        TRAIN: ocp.args.StandardRestore(jax.tree.map(_abstract, target))}))
    return restored[TRAIN]

  def restore_for_resume(self, variables, opt_state) -> Optional[Resumed]:
    """The newest intact step of checkpoints/, or None when there is none at all.

    Damaged steps (unreadable files, missing items) are skipped and reported in `Resumed`;
    nothing is moved here, so the caller can still refuse the resume (e.g. another config)
    with the workdir untouched, then call `set_aside_damaged`. A checkpoint that does not fit
    the run (another model or optimizer) is an error, not damage. When every step is damaged,
    that is an error too: starting from scratch would silently discard the run.
    """
    damaged, reasons = [], []
    for step in sorted(self.latest.all_steps(), reverse=True):
      directory = self.latest.directory / str(step)
      error = None
      try:
        with _reading(directory):
          config = self._read_config(self.latest, step)
          restored_vars = self._restore_model(self.latest, step, variables)
          restored_opt = self._restore_train(step, {"opt_state": opt_state})["opt_state"]
      except DamagedCheckpointError as e:
        error = str(e)
      # Hosts read their own files: a step any host cannot read is damaged for all of them.
      if parallel.all_hosts_agree(error is None):
        return Resumed(step, restored_vars, restored_opt, config, damaged, reasons)
      damaged.append(step)
      reasons.append(error or f"{directory}: checkpoint is unreadable on another host")
    if damaged:
      raise DamagedCheckpointError(
          f"{self.latest.directory}: all {len(damaged)} checkpoint(s) are unreadable or "
          f"incomplete (steps {sorted(damaged)}; first: {reasons[0]}); nothing was changed. "
          f"Move {LATEST_DIR}/ away to start from scratch, or restore a copy")
    return None

  def set_aside_damaged(self, resumed: Resumed) -> None:
    """Moves the damaged steps `restore_for_resume` skipped to checkpoints_damaged/ (kept:
    a later save of the same step would collide with them), with one warning line."""
    if resumed.damaged:
      moved = self._move_damaged(resumed.damaged)
      warn(f"resuming from step {resumed.step}: skipped {len(moved)} damaged checkpoint(s), "
           f"moved to {', '.join(moved)} (not deleted); first: {resumed.reasons[0]}")

  def _move_damaged(self, steps: List[int]) -> List[str]:
    """Moves damaged step directories to checkpoints_damaged/<step>[.N] (process 0 moves,
    every process agrees on the names before and waits for the move after)."""
    dest_root, moved = self.workdir / DAMAGED_DIR, []
    for step in steps:
      dest, n = dest_root / str(step), 1
      while dest.exists():
        dest, n = dest_root / f"{step}.{n}", n + 1
      moved.append(dest)
    parallel.sync_hosts("segjax_damaged_checkpoints_named")
    if jax.process_index() == 0:
      dest_root.mkdir(parents=True, exist_ok=True)
      for step, dest in zip(steps, moved):
        (self.latest.directory / str(step)).rename(dest)
    parallel.sync_hosts("segjax_damaged_checkpoints_moved")
    self.latest.reload()
    return [str(d) for d in moved]


def _abstract(x):
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
