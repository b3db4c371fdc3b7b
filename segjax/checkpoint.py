"""Checkpoints: orbax managers for the latest N steps and for the best step by mIoU.

Layout of a workdir:
  checkpoints/<step>/{model,train,config}   latest `max_to_keep` steps (async saves)
  checkpoints_best/<step>/{model,config}    the step with the highest eval mIoU
where `model` = {"params", "batch_stats"}, `train` = {"opt_state"} and `config` is the
experiment's ConfigDict as JSON. Evaluation and `init_from` read only `model`, so a converted
PyTorch checkpoint (model + config, no optimizer) is a valid checkpoint too.

Before any restore the saved shapes are compared with the model's, so a checkpoint from
another model fails with the first mismatched parameter named instead of an orbax trace.
"""
from typing import Any, Dict, Optional, Tuple, Union

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from segjax.errors import CheckpointError

MODEL, TRAIN, CONFIG = "model", "train", "config"
LATEST_DIR, BEST_DIR = "checkpoints", "checkpoints_best"


def flatten(tree, prefix=()) -> Dict[str, Any]:
  """{"a": {"b": x}} -> {"a/b": x}; leaves are whatever is not a dict."""
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(flatten(v, prefix + (str(k),)))
  elif tree is not None:
    out["/".join(prefix)] = tree
  return out


def check_compatible(saved: Dict[str, Any], target: Dict[str, Any], source: str,
                     allow_missing: bool = False) -> None:
  """Raises CheckpointError naming the first key whose presence or shape differs.

  Args:
    saved: tree of objects with a `.shape` (orbax ArrayMetadata or arrays) from a checkpoint.
    target: tree of the model's arrays or ShapeDtypeStructs.
    source: the checkpoint path, for the message.
    allow_missing: accept target keys absent from `saved` (init_from of an encoder only).
  """
  saved_flat, target_flat = flatten(saved), flatten(target)
  unexpected = sorted(set(saved_flat) - set(target_flat))
  if unexpected:
    raise CheckpointError(
        f"{source}: checkpoint has {len(unexpected)} parameter(s) the model lacks, first "
        f"'{unexpected[0]}'; was it saved for another model (check config.model)?")
  missing = sorted(set(target_flat) - set(saved_flat))
  if missing and not allow_missing:
    raise CheckpointError(
        f"{source}: checkpoint lacks {len(missing)} parameter(s) of the model, first "
        f"'{missing[0]}'; was it saved for another model (check config.model)?")
  for key in sorted(saved_flat):
    s, t = tuple(saved_flat[key].shape), tuple(target_flat[key].shape)
    if s != t:
      raise CheckpointError(
          f"{source}: parameter '{key}' has shape {s} in the checkpoint but {t} in the model "
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
    options = dict(enable_async_checkpointing=async_save, create=not read_only)
    # Handlers are named up front so a fresh process can read metadata before any save.
    handlers = {MODEL: ocp.StandardCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler()}
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
  def save(self, step: int, model_vars, config: ml_collections.ConfigDict, opt_state=None,
           force: bool = False) -> None:
    """Saves model (+ optimizer state, unless None: converted weights have none)."""
    items = {MODEL: ocp.args.StandardSave(model_vars),
             CONFIG: ocp.args.JsonSave(config.to_dict())}
    if opt_state is not None:
      items[TRAIN] = ocp.args.StandardSave({"opt_state": opt_state})
    self.latest.save(step, args=ocp.args.Composite(**items), force=force)

  def save_best(self, step: int, model_vars, config, miou: float) -> None:
    self.best.save(step, args=ocp.args.Composite(**{
        MODEL: ocp.args.StandardSave(model_vars),
        CONFIG: ocp.args.JsonSave(config.to_dict())}), metrics={"mIoU": float(miou)})

  def best_miou(self) -> Optional[float]:
    step = self.best.latest_step()
    if step is None:
      return None
    return self.best.metrics(step)["mIoU"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

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
        steps = sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))
        raise CheckpointError(f"{self.workdir}: no checkpoint at step {step}; saved: {steps}")
    if step is None:
      raise CheckpointError(
          f"{self.workdir}: no checkpoint found (looked in {LATEST_DIR}/ and {BEST_DIR}/)")
    return mngr, step

  def saved_config(self, which: Union[str, int] = "latest") -> ml_collections.ConfigDict:
    mngr, step = self.resolve(which)
    cfg = mngr.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
    return ml_collections.ConfigDict(cfg[CONFIG])

  def restore_model(self, which: Union[str, int], target, allow_missing: bool = False):
    """Restores {"params", "batch_stats"} shaped like `target`; returns (step, vars).

    With allow_missing, target leaves the checkpoint lacks keep their value from `target`
    (which must then hold arrays, not shapes).
    """
    mngr, step = self.resolve(which)
    source = str(epath.Path(mngr.directory) / str(step))
    saved = mngr.item_metadata(step)[MODEL].tree
    check_compatible(saved, target, source, allow_missing=allow_missing)
    abstract = jax.tree.map(_abstract, _select(saved, target))
    restored = mngr.restore(step, args=ocp.args.Composite(**{
        MODEL: ocp.args.StandardRestore(abstract)}))[MODEL]
    return step, _merge(target, restored) if allow_missing else restored

  def restore_train(self, step: int, target):
    """Restores {"opt_state"} of a latest-checkpoint step, shaped like `target`."""
    restored = self.latest.restore(step, args=ocp.args.Composite(**{
        TRAIN: ocp.args.StandardRestore(jax.tree.map(_abstract, target))}))
    return restored[TRAIN]


def _abstract(x):
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
