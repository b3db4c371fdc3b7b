"""Optimizer and learning-rate schedule built from config.optim.

Three recipes: `adamw` (SegFormer, Swin: decoupled weight decay), `sgd` (the CNN models of
mmseg: momentum 0.9 and *coupled* L2 decay, i.e. wd * param added to the gradient before
momentum, exactly torch.optim.SGD) and `adam` (torch.optim.Adam with its coupled L2 decay:
the real-time papers' recipe, ENet, ESPNet, CGNet). Per-parameter rules:
  lr_mults          (regex, multiplier) over "/"-joined parameter paths, first match wins
                    (SegFormer's head x10). Multiplier 0 freezes: no update at all, weight
                    decay included (pair it with a backbone's `frozen_stages`, which stops
                    the gradient and BN statistics but cannot stop the decay);
  no_decay          regexes of paths without weight decay;
  no_decay_norms    every parameter of a normalisation layer (BatchNorm, LayerNorm,
                    GroupNorm) undecayed, found by module type rather than by name: mmseg's
                    `norm_decay_mult=0`. A flax norm layer is the module whose params
                    include `scale`.
  layer_decay_*     layer-wise lr decay (BEiT, ConvNeXt, mmseg's
                    LearningRateDecayOptimizerConstructor): a backbone parameter of layer id
                    i (0 = embeddings .. num_layers + 1 = unscaled, given by the backbone's
                    `layer_id(path, num_layers, decay_type)`, which mirrors mmseg's rule for
                    that family) has its lr scaled by rate ** (num_layers + 1 - i), on top
                    of lr_mults. Everything outside the backbone is unscaled.
Each parameter lands in a group of (lr multiplier, decays?) with its own schedule;
optax.multi_transform applies them.

`ema_decay` > 0 keeps an exponential moving average of the parameters (updated after every
step, in the train state, saved with the model as the "ema" collection); evaluation,
checkpoints_best, `--mode=evaluate` and `Segmenter` then use the averaged weights.
"""
import re
from typing import Callable, Dict, Mapping, Optional, Tuple

import jax
import optax

from segjax.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd", "adam")


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def warmup_poly_schedule(cfg, num_steps: int, lr_mult: float = 1.0) -> optax.Schedule:
  """Linear warmup from lr*warmup_start_factor to lr, then polynomial decay to end_lr.

  mmseg LinearLR(start_factor, end=warmup_steps) + PolyLR(power, eta_min=end_lr). As with
  mmseg's eta_min, end_lr is absolute: the same floor for every lr_mult group. With
  `lr_step_size` > 0 (optional key) the decay is Caffe's "step" policy instead: lr times
  `lr_step_gamma` (default 0.1) every lr_step_size steps after the warmup (DeepLab v1).
  """
  lr = cfg.lr * lr_mult
  warmup = min(cfg.warmup_steps, num_steps)
  decay = optax.polynomial_schedule(lr, cfg.end_lr, cfg.poly_power, max(num_steps - warmup, 1))
  step_size = int(cfg.get("lr_step_size", 0))
  if step_size > 0:  # instead of poly: Caffe's "step" policy, lr * gamma ** (step // size)
    decay = optax.exponential_decay(lr, step_size, cfg.get("lr_step_gamma", 0.1),
                                    staircase=True)
  if warmup == 0:
    return decay
  ramp = optax.linear_schedule(lr * cfg.warmup_start_factor, lr, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


LayerId = Callable[[str, int, str], int]
LAYER_DECAY_TYPES = ("layer_wise", "stage_wise")


def layer_decay_scale(path: str, cfg, layer_id: Optional[LayerId]) -> float:
  """The layer-wise lr scale of parameter `path` (1 when optim.layer_decay_rate is 1)."""
  rate = cfg.get("layer_decay_rate", 1.0)
  if rate == 1.0 or not path.startswith("backbone/"):
    return 1.0
  n = cfg.layer_decay_num_layers
  return rate ** (n + 1 - layer_id(path[len("backbone/"):], n, cfg.layer_decay_type))


def param_groups(params, cfg, layer_id: Optional[LayerId] = None
                 ) -> Dict[str, Tuple[float, bool]]:
  """{"/"-joined path: (lr multiplier, decays?)} of every parameter (see the module doc).

  `layer_id` is the backbone's rule for layer-wise decay (needed when it is on)."""
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
      mult *= layer_decay_scale(path, cfg, layer_id)
      exempt = (in_norm and cfg.get("no_decay_norms", False)) or any(
          re.search(p, path) for p in cfg.no_decay)
      groups[path] = (mult, not exempt)
  visit(params, "")
  return groups


def _exact(x: float) -> str:
  """The shortest spelling of x that reads back as x ("10", "0.531441", "0.4782969")."""
  return f"{x:g}" if float(f"{x:g}") == x else repr(x)


def _check_layer_decay(cfg, layer_id: Optional[LayerId], backbone_name: str) -> None:
  rate = cfg.get("layer_decay_rate", 1.0)
  if rate == 1.0:
    return
  if not 0 < rate < 1:
    raise ConfigError(f"optim.layer_decay_rate must be in (0, 1] (1 = off), got {rate}")
  if cfg.layer_decay_type not in LAYER_DECAY_TYPES:
    raise ConfigError(f"optim.layer_decay_type must be one of {LAYER_DECAY_TYPES}, got "
                      f"{cfg.layer_decay_type!r}")
  if int(cfg.layer_decay_num_layers) < 1:
    raise ConfigError("optim.layer_decay_num_layers must be >= 1, got "
                      f"{cfg.layer_decay_num_layers}")
  if layer_id is None:
    raise ConfigError(f"optim.layer_decay_rate={rate}: backbone {backbone_name!r} defines no "
                      "layer ids (layer_id method); set optim.layer_decay_rate=1.0")


def make_optimizer(cfg, params, num_steps: int, layer_id: Optional[LayerId] = None,
                   backbone_name: str = "-"):
  """Returns the optax transformation for `params` (see the module docstring).

  `layer_id`: the backbone's layer-id rule, required when optim.layer_decay_rate < 1."""
  name = cfg.get("name", "adamw")
  if name not in OPTIMIZERS:
    raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"optim.lr must be positive, got {cfg.lr}")
  if cfg.get("lr_step_size", 0) < 0 or not 0 < cfg.get("lr_step_gamma", 0.1) <= 1:
    raise ConfigError(f"optim.lr_step_size must be >= 0 (0 = poly) and optim.lr_step_gamma in "
                      f"(0, 1], got {cfg.get('lr_step_size')} and {cfg.get('lr_step_gamma')}")
  if not 0 <= cfg.get("ema_decay", 0.0) < 1:
    raise ConfigError(f"optim.ema_decay must be in [0, 1) (0 = off), got {cfg.ema_decay}")
  _check_layer_decay(cfg, layer_id, backbone_name)
  for key in ("lr_mults", "no_decay"):
    for entry in cfg[key]:
      pattern = entry[0] if key == "lr_mults" else entry
      try:
        re.compile(pattern)
      except re.error as e:
        raise ConfigError(f"optim.{key}: bad regex {pattern!r}: {e}") from None

  groups = param_groups(params, cfg, layer_id)
  # One optax group per distinct (multiplier, decays?). The label (a key of the saved
  # optimizer state) spells the multiplier exactly: "lr10_decay", "lr0.531441_nodecay".
  names = {g: f"lr{_exact(g[0])}_{'decay' if g[1] else 'nodecay'}" for g in set(groups.values())}
  labels = jax.tree_util.tree_map_with_path(lambda path, _: names[groups[path_str(path)]],
                                            params)
  transforms = {}
  for (mult, decays), group in names.items():
    if mult == 0:
      transforms[group] = optax.set_to_zero()
      continue
    wd = cfg.weight_decay if decays else 0.0
    schedule = warmup_poly_schedule(cfg, num_steps, mult)
    if name == "adamw":
      transforms[group] = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                      weight_decay=wd)
    elif name == "adam":
      transforms[group] = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                                      optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    else:
      transforms[group] = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                                      optax.sgd(schedule, momentum=cfg.momentum))
  tx = optax.multi_transform(transforms, labels)
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx
