"""Optimizer and learning-rate schedule built from config.optim.

Two recipes: `adamw` (SegFormer, Swin: decoupled weight decay) and `sgd` (the CNN models of
mmseg: momentum 0.9 and *coupled* L2 decay, i.e. wd * param added to the gradient before
momentum, exactly torch.optim.SGD). Per-parameter rules:
  lr_mults          (regex, multiplier) over "/"-joined parameter paths, first match wins
                    (SegFormer's head x10). Multiplier 0 freezes: no update at all, weight
                    decay included (pair it with a backbone's `frozen_stages`, which stops
                    the gradient and BN statistics but cannot stop the decay);
  no_decay          regexes of paths without weight decay;
  no_decay_norms    every parameter of a normalisation layer (BatchNorm, LayerNorm,
                    GroupNorm) undecayed, found by module type rather than by name: mmseg's
                    `norm_decay_mult=0`. A flax norm layer is the module whose params
                    include `scale`.
Each parameter lands in a group "lr{mult}_{decay|nodecay}" with its own schedule;
optax.multi_transform applies them.
"""
import re
from typing import Dict, Mapping, Tuple

import jax
import optax

from segjax.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def warmup_poly_schedule(cfg, num_steps: int, lr_mult: float = 1.0) -> optax.Schedule:
  """Linear warmup from lr*warmup_start_factor to lr, then polynomial decay to end_lr.

  mmseg LinearLR(start_factor, end=warmup_steps) + PolyLR(power, eta_min=end_lr). As with
  mmseg's eta_min, end_lr is absolute: the same floor for every lr_mult group.
  """
  lr = cfg.lr * lr_mult
  warmup = min(cfg.warmup_steps, num_steps)
  decay = optax.polynomial_schedule(lr, cfg.end_lr, cfg.poly_power, max(num_steps - warmup, 1))
  if warmup == 0:
    return decay
  ramp = optax.linear_schedule(lr * cfg.warmup_start_factor, lr, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


def param_groups(params, cfg) -> Dict[str, Tuple[float, bool]]:
  """{"/"-joined path: (lr multiplier, decays?)} of every parameter (see the module doc)."""
  groups = {}

  def visit(node, prefix):
    is_layer = all(not isinstance(v, Mapping) for v in node.values())
    in_norm = is_layer and "scale" in node  # a flax norm layer: BatchNorm, LayerNorm...
    for key, value in node.items():
      path = f"{prefix}{key}"
      if isinstance(value, Mapping):
        visit(value, path + "/")
        continue
      mult = next((float(m) for pattern, m in cfg.lr_mults if re.search(pattern, path)), 1.0)
      exempt = (in_norm and cfg.get("no_decay_norms", False)) or any(
          re.search(p, path) for p in cfg.no_decay)
      groups[path] = (mult, not exempt)
  visit(params, "")
  return groups


def make_optimizer(cfg, params, num_steps: int):
  """Returns the optax transformation for `params` (see the module docstring)."""
  name = cfg.get("name", "adamw")
  if name not in OPTIMIZERS:
    raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"optim.lr must be positive, got {cfg.lr}")
  for key in ("lr_mults", "no_decay"):
    for entry in cfg[key]:
      pattern = entry[0] if key == "lr_mults" else entry
      try:
        re.compile(pattern)
      except re.error as e:
        raise ConfigError(f"optim.{key}: bad regex {pattern!r}: {e}") from None

  groups = param_groups(params, cfg)

  def label(path, _):
    mult, decay = groups[path_str(path)]
    return f"lr{mult:g}_{'decay' if decay else 'nodecay'}"

  labels = jax.tree_util.tree_map_with_path(label, params)
  transforms = {}
  for group in set(jax.tree.leaves(labels)):
    mult = float(group[2:].split("_")[0])
    if mult == 0:
      transforms[group] = optax.set_to_zero()
      continue
    wd = cfg.weight_decay if group.endswith("_decay") else 0.0
    schedule = warmup_poly_schedule(cfg, num_steps, mult)
    if name == "adamw":
      transforms[group] = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                      weight_decay=wd)
    else:
      transforms[group] = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                                      optax.sgd(schedule, momentum=cfg.momentum))
  tx = optax.multi_transform(transforms, labels)
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx
