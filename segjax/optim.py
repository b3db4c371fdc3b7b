"""Optimizer and learning-rate schedule built from config.optim.

Per-parameter rules are regexes over "/"-joined parameter paths, so they work for any model:
`no_decay` exempts norms and depthwise convs from weight decay, `lr_mults` scales the head's
learning rate (SegFormer: x10). Both are realised with optax.multi_transform over groups.
"""
import re
from typing import Tuple

import jax
import optax

from segjax.errors import ConfigError


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def warmup_poly_schedule(cfg, num_steps: int, lr_mult: float = 1.0) -> optax.Schedule:
  """Linear warmup from lr*warmup_start_factor to lr, then polynomial decay to end_lr.

  mmseg LinearLR(start_factor=1e-6, end=1500) + PolyLR(power=1.0, eta_min=0, end=160k).
  """
  lr = cfg.lr * lr_mult
  warmup = min(cfg.warmup_steps, num_steps)
  decay = optax.polynomial_schedule(lr, cfg.end_lr * lr_mult, cfg.poly_power,
                                    max(num_steps - warmup, 1))
  if warmup == 0:
    return decay
  ramp = optax.linear_schedule(lr * cfg.warmup_start_factor, lr, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


def param_group(path: str, cfg) -> Tuple[float, bool]:
  """(lr multiplier, decays?) of the parameter at "/"-joined `path`."""
  mult = 1.0
  for pattern, m in cfg.lr_mults:
    if re.search(pattern, path):
      mult = float(m)
      break
  decay = not any(re.search(p, path) for p in cfg.no_decay)
  return mult, decay


def make_optimizer(cfg, params, num_steps: int):
  """Returns the optax transformation for `params`.

  Each parameter lands in a group "lr{mult}_{decay|nodecay}"; every group is an AdamW with
  its own schedule and weight decay.
  """
  if cfg.lr <= 0:
    raise ConfigError(f"optim.lr must be positive, got {cfg.lr}")
  for pattern, _ in cfg.lr_mults:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"optim.lr_mults: bad regex {pattern!r}: {e}") from None

  def label(path, _):
    mult, decay = param_group(path_str(path), cfg)
    return f"lr{mult:g}_{'decay' if decay else 'nodecay'}"

  labels = jax.tree_util.tree_map_with_path(label, params)
  transforms = {}
  for name in set(jax.tree.leaves(labels)):
    mult = float(name[2:].split("_")[0])
    wd = cfg.weight_decay if name.endswith("_decay") else 0.0
    transforms[name] = optax.adamw(warmup_poly_schedule(cfg, num_steps, mult), b1=cfg.b1,
                                   b2=cfg.b2, eps=cfg.eps, weight_decay=wd)
  tx = optax.multi_transform(transforms, labels)
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx
