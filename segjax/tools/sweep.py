"""Ablation sweeps: a Study is a base config, settings (config overrides) and seeds.

An `experiments/<study>.py` script describes one and hands it to `sweep.main`:

  python experiments/deep_supervision.py                  # run (or resume), then report
  python experiments/deep_supervision.py --scale=paper --launch=tpu:NAME:ZONE:v4-8
  python experiments/deep_supervision.py --collect        # report from finished runs only

Every run is an ordinary `python -m segjax.main` process with `--config.<key>=<value>`
overrides and its own workdir, <runs>/<study>/<scale>/<label>/seed<k>, and log beside it:
what a study did can be rerun, evaluated or inspected like any run. Runs go one after the
other (two 2-core jobs at once only slow each other down); a run whose eval_results.json is
at its config's last step is finished and never rerun, an unfinished one resumes from its
checkpoint, so an interrupted study restarts where it stopped.

A study with `evaluations` (test-time protocols: whole / slide / multi-scale + flip / CRF)
also evaluates each finished run under each, as `segjax.main --mode=evaluate` with eval.*
overrides, kept as <workdir>/sweep_eval/<label>.json; its rows are those evaluations.

Every result row comes from a run's own eval_results.json (plus the cached output of
`segjax.tools.summary` / `segjax.tools.benchmark` for a setting when the study measures
GFLOPs or speed); the script writes results.jsonl (one row per run), results.md (mean +- std
over seeds per setting, sample std) and PNG plots next to itself, <script dir>/<study>/<scale>/,
and adds nothing by hand. `--scale=cpu` (default) is sized for this 2-core machine (each study
<= ~45 min); `--scale=paper` is the study at full size, for accelerators.

results.jsonl is also the study's record: a run whose workdir is gone (another machine, a
new session, checkpoints deleted) but whose rows it holds, with the same config and
overrides, counts as done and keeps its rows. So a study longer than one sitting runs in
parts (`--only`, or stopped and restarted) and the report covers every setting with results.
"""
import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app, flags

from segjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALES = ("cpu", "paper")
# What a `measure` entry runs, and which entries of its final JSON line become which columns
# (a dotted path reads a nested entry).
TOOLS = {
    "summary": (("segjax.tools.summary",), {"params": "params", "gflops": "gflops"}),
    "benchmark": (("segjax.tools.benchmark", "--steps=3", "--warmup=1"),
                  {k: k for k in ("train_images_per_s", "eval_images_per_s", "peak_memory_gib")}),
    # XLA's memory analysis of the compiled train step (no remat), one device: the memory a
    # setting needs, free of the host process's baseline that benchmark's peak RSS includes.
    "train_memory": (("segjax.tools.summary", "--train_memory"),
                     {"train_temporaries_mib": "train_memory.none.temporaries_mib",
                      "train_arguments_mib": "train_memory.none.arguments_mib"}),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("scale", "cpu", SCALES, "cpu: sized for a 2-core machine; paper: full size.")
flags.DEFINE_integer("seeds", None, "Seeds per setting (default: the study's, >= 3).")
flags.DEFINE_list("only", None, "Run only these setting labels (the report still covers every "
                  "setting with results).")
flags.DEFINE_bool("collect", False, "Report from finished runs only; start nothing.")
flags.DEFINE_string("launch", "local", "local: run here, one after the other; "
                    "tpu:NAME:ZONE:ACCELERATOR: print the launch.sh lines instead.")
flags.DEFINE_string("runs", os.path.join(REPO, "runs", "experiments"), "Parent of the runs.")
flags.DEFINE_multi_string("set", [], "key=value: a config override for every run, e.g. "
                          "--set=data.root=/data/cityscapes at --scale=paper.")
flags.DEFINE_string("out", None, "Where results go (default: <script dir>/<study>/<scale>).")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a study: a label (a directory name), config overrides (dotted keys) and
  choices for the config file's argument (`decoder=psp,aux=0.4`: a config's get_config(arg)
  builds what overrides cannot, e.g. another head or loss list)."""
  label: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  choices: str = ""


@dataclasses.dataclass(frozen=True)
class Scale:
  """A study's base config and the overrides every setting gets at one scale."""
  config: str  # relative to the repository root, with its argument if any (`x.py:recipe=cpu`)
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  description: str  # the question, one paragraph: the head of results.md
  scales: Mapping[str, Scale]  # "cpu" and, documented, "paper"
  settings: Sequence[Setting]
  seeds: int = 3
  measure: Sequence[str] = ()  # "summary" (params, GFLOPs), "benchmark" (img/s, memory),
  # "train_memory" (XLA's count for the train step)
  # Extra flags of a measuring tool, e.g. {"benchmark": ("--notrain", "--batch_size=1",
  # "--config.data.crop_size=(512, 1024)")}: measure at another size than the runs train at.
  measure_flags: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  classes: Sequence[str] = ()  # per-class IoU columns (e.g. the rarest classes)
  # Test-time protocols (eval.* overrides): each trained run is also evaluated under each
  # (`segjax.main --mode=evaluate`), and the rows are the evaluations, not the training runs.
  evaluations: Sequence[Setting] = ()
  plots: Sequence[Tuple[str, str]] = (("setting", "mIoU"),)  # (x column, y column)
  # x columns of plots whose Pareto front (y higher is better) is drawn and listed in
  # results.md, with x's better direction: {"eval_images_per_s": "higher", "gflops": "lower"}.
  fronts: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
  setting: Setting
  seed: int
  config: str
  overrides: Tuple[Tuple[str, Any], ...]
  workdir: str

  @property
  def log(self) -> str:
    return self.workdir + ".log"

  def command(self, python: str = sys.executable) -> List[str]:
    return [python, "-m", "segjax.main", f"--config={self.config}", f"--workdir={self.workdir}",
            *override_flags(self.overrides)]


def format_value(value: Any) -> str:
  """A value as ml_collections' --config.key=value parser reads it back."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  raise ConfigError(f"sweep: cannot pass {value!r} ({type(value).__name__}) as a command-line "
                    "override; use a number, string, bool or tuple")


def override_flags(overrides) -> List[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in overrides]


def plan(study: Study, scale: str, runs_dir: str, seeds: Optional[int] = None,
         only: Optional[Sequence[str]] = None, extra: Sequence[str] = ()) -> List[Run]:
  """Every (setting, seed) run of `study` at `scale`, in order; refuses a bad study.

  `extra`: "key=value" overrides for every run (--set), after the study's own."""
  if scale not in study.scales:
    raise ConfigError(f"study {study.name!r} has no scale {scale!r} (it has "
                      f"{', '.join(study.scales)})")
  seeds = study.seeds if seeds is None else seeds
  if seeds < 1:
    raise ConfigError(f"--seeds must be >= 1, got {seeds}")
  labels = [s.label for s in study.settings]
  if len(set(labels)) != len(labels) or not all(l and "/" not in l for l in labels):
    raise ConfigError(f"study {study.name!r}: setting labels must be unique directory names, "
                      f"got {labels}")
  unknown = sorted(set(only or ()) - set(labels))
  if unknown:
    raise ConfigError(f"--only: no setting {unknown} in study {study.name!r} ({labels})")
  eval_labels = [e.label for e in study.evaluations]
  if len(set(eval_labels)) != len(eval_labels) or not all(l and "/" not in l
                                                          for l in eval_labels):
    raise ConfigError(f"study {study.name!r}: evaluation labels must be unique file names, "
                      f"got {eval_labels}")
  for tool in study.measure:
    if tool not in TOOLS:
      raise ConfigError(f"study {study.name!r}: measure {tool!r} is not one of {sorted(TOOLS)}")
  unused = sorted(set(study.measure_flags) - set(study.measure))
  if unused:
    raise ConfigError(f"study {study.name!r}: measure_flags for {unused}, which the study does "
                      f"not measure (measure={tuple(study.measure)})")
  plotted = sorted({x for x, _ in study.plots} - {"setting"})
  for x, better in study.fronts.items():
    if better not in ("higher", "lower") or x not in plotted:
      raise ConfigError(f"study {study.name!r}: fronts[{x!r}] = {better!r}; a front needs an x "
                        f"column of plots ({plotted}) and 'higher' or 'lower'")
  base = study.scales[scale]
  forced = {}
  for item in extra:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"--set expects key=value, got {item!r}")
    forced[key] = value
  if "://" not in runs_dir:  # gs:// workdirs stay as given
    runs_dir = os.path.abspath(runs_dir)
  out = []
  for setting in study.settings:
    if only and setting.label not in only:
      continue
    for seed in range(seeds):
      overrides = {**base.overrides, **setting.overrides, **forced, "seed": seed}
      config = base.config
      if setting.choices:
        config += ("," if ":" in config else ":") + setting.choices
      out.append(Run(setting, seed, config, tuple(overrides.items()),
                     os.path.join(runs_dir, study.name, scale, setting.label, f"seed{seed}")))
  return out


def finished(workdir: str) -> bool:
  """True when the run's eval_results.json is at its config's train.num_steps."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      num_steps = json.load(f)["train"]["num_steps"]
    with open(os.path.join(workdir, "eval_results.json")) as f:
      return json.load(f)["step"] == num_steps
  except (OSError, ValueError, KeyError, TypeError):
    return False


class Stopped(Exception):
  """SIGTERM reached the sweep (a preemption notice, `kill`)."""


def _stop(signum, frame):
  raise Stopped()


def execute(run: Run) -> None:
  """Runs (or resumes) one run as its own process, its output appended to run.log; adds the
  process's wall time to <workdir>.time.json so the study reports what its runs cost.

  Stopped (SIGTERM to the sweep), it passes SIGTERM on and waits: the run checkpoints and
  exits rather than train on orphaned, and the time spent so far still counts (a stopped and
  resumed run once reported only its last segment: 1.0 of its ~4 minutes). Ctrl-C reaches
  the run itself (same process group); the sweep waits for it the same way.
  """
  os.makedirs(os.path.dirname(run.workdir), exist_ok=True)
  start = time.time()
  with open(run.log, "a") as log:
    log.write(f"$ {shlex.join(run.command())}\n")
    log.flush()
    proc = subprocess.Popen(run.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
      code = proc.wait()
    except Stopped:
      proc.send_signal(signal.SIGTERM)
      proc.wait()
      raise
    except KeyboardInterrupt:
      proc.wait()
      raise
    finally:
      timing = run.workdir + ".time.json"
      spent = _read_json(timing, {}).get("wall_s", 0.0) + time.time() - start
      _write_json(timing, {"wall_s": round(spent, 1)})
  if code != 0 or not finished(run.workdir):
    tail = "".join(open(run.log).readlines()[-5:])
    raise RuntimeError(f"sweep: run {run.workdir} failed (exit status {code}); the end of "
                       f"{run.log}:\n{tail}")


def evaluation_path(run: Run, evaluation: Setting) -> str:
  return os.path.join(run.workdir, "sweep_eval", f"{evaluation.label}.json")


def evaluation_command(run: Run, evaluation: Setting, python: str = sys.executable):
  return [python, "-m", "segjax.main", "--mode=evaluate", f"--workdir={run.workdir}",
          *override_flags(evaluation.overrides.items())]


def evaluate(run: Run, evaluation: Setting) -> None:
  """Evaluates a finished run's last checkpoint under `evaluation`'s eval overrides (the run's
  saved config otherwise) and keeps the result as <workdir>/sweep_eval/<label>.json."""
  target = evaluation_path(run, evaluation)
  if os.path.exists(target):
    return
  step = _read_json(os.path.join(run.workdir, "eval_results.json"), {}).get("step")
  produced = os.path.join(run.workdir, f"eval_step{step}.json")
  if os.path.exists(produced):
    os.remove(produced)  # a stale result of another protocol must not be taken for this one
  cmd = evaluation_command(run, evaluation)
  with open(run.log, "a") as log:
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  if code != 0 or not os.path.exists(produced):
    tail = "".join(open(run.log).readlines()[-5:])
    raise RuntimeError(f"sweep: evaluating {run.workdir} as {evaluation.label!r} failed (exit "
                       f"status {code}); the end of {run.log}:\n{tail}")
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.replace(produced, target)


def measure(study: Study, run: Run, python: str = sys.executable) -> Dict[str, Any]:
  """The study's measured columns for a setting (cached beside its runs: one per setting)."""
  row = {}
  for tool in study.measure:
    module_args, columns = TOOLS[tool]
    cache = os.path.join(os.path.dirname(run.workdir), f"{tool}.json")
    if not os.path.exists(cache):
      cmd = [python, "-m", *module_args, f"--config={run.config}",
             *override_flags(run.overrides), *study.measure_flags.get(tool, ())]
      proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
      lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
      if proc.returncode != 0 or not lines:
        raise RuntimeError(f"sweep: {shlex.join(cmd)} failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      _write_json(cache, json.loads(lines[-1]))
    found = _read_json(cache, {})
    for column, path in columns.items():
      value = found
      for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
      if value is not None:
        row[column] = value
  return row


def row_label(study: Study, run: Run, evaluation: Optional[Setting] = None) -> str:
  """The `setting` of a run's row: its setting's label, or its evaluation protocol's."""
  if evaluation is None:
    return run.setting.label
  return evaluation.label if len(study.settings) == 1 else f"{run.setting.label}:{evaluation.label}"


def _row_overrides(run: Run) -> Dict[str, Any]:
  return {k: v for k, v in run.overrides if k != "seed"}


def result_row(study: Study, scale: str, run: Run,
               evaluation: Optional[Setting] = None) -> Dict[str, Any]:
  """One results.jsonl row, from the run's own eval_results.json (or, for an evaluation
  protocol, from the result of its --mode=evaluate)."""
  path = (os.path.join(run.workdir, "eval_results.json") if evaluation is None
          else evaluation_path(run, evaluation))
  with open(path) as f:
    saved = json.load(f)
  metrics = saved["metrics"]
  row = {"study": study.name, "scale": scale, "setting": row_label(study, run, evaluation),
         "seed": run.seed, "step": saved["step"], "config": run.config,
         "overrides": _row_overrides(run)}
  if evaluation is not None:
    row["evaluation"] = dict(evaluation.overrides)
    row["eval_seconds"] = metrics["seconds"]
  row.update({k: metrics[k] for k in ("mIoU", "mAcc", "aAcc", "mDice") if k in metrics})
  for name in study.classes:
    row[f"IoU.{name}"] = metrics["IoU"][name]
  timing = _read_json(run.workdir + ".time.json", {})
  if "wall_s" in timing:
    row["run_minutes"] = round(timing["wall_s"] / 60, 2)
  return row


def recorded(study: Study, scale: str, runs: Sequence[Run],
             out_dir: str) -> Dict[Tuple[str, int], List[Dict[str, Any]]]:
  """The rows of an earlier report (<out_dir>/results.jsonl) of each run whose workdir is gone,
  by (setting label, seed): all its rows there, with the same config and overrides.

  A study's results outlive its workdirs: a fresh machine, or checkpoints deleted to free
  the disk, neither retrains such a run nor drops it from the report, so a study longer than
  one machine's session is run in parts. A workdir that exists is the truth (finished, or
  resumed); to redo a run, delete its workdir and its rows."""
  earlier: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
  try:
    with open(os.path.join(out_dir, "results.jsonl")) as f:
      for number, line in enumerate(f, 1):
        try:
          row = json.loads(line)
          earlier[(row["setting"], row["seed"], row["scale"])] = row
        except (ValueError, KeyError, TypeError) as e:
          raise ConfigError(f"sweep: {f.name} line {number} is not a results row ({e!r}); "
                            "fix or delete that line") from e
  except FileNotFoundError:
    return {}
  found = {}
  for run in runs:
    if os.path.exists(run.workdir):
      continue
    rows = [earlier.get((row_label(study, run, e), run.seed, scale))
            for e in (study.evaluations or (None,))]
    # JSON turns tuples into lists: compare the overrides as they were written.
    same = json.loads(json.dumps(_row_overrides(run)))
    if all(r is not None and r["study"] == study.name and r["config"] == run.config
           and r["overrides"] == same for r in rows):
      found[(run.setting.label, run.seed)] = rows
  return found


def aggregate(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Per setting (in first-seen order): n and the mean and sample std of every numeric column
  any of its rows has ({"mIoU": (mean, std)}); std is nan for a single seed."""
  settings: Dict[str, List[Dict[str, Any]]] = {}
  for row in rows:
    settings.setdefault(row["setting"], []).append(row)
  out = []
  for label, group in settings.items():
    agg: Dict[str, Any] = {"setting": label, "n": len(group)}
    keys = [k for k in dict.fromkeys(k for r in group for k in r)
            if k not in ("seed", "step") and all(_numeric(r.get(k)) or r.get(k) is None
                                                  for r in group)]
    for key in keys:
      values = [float(r[key]) for r in group if _numeric(r.get(key))]
      if not values:
        continue
      if len(set(values)) == 1:  # e.g. a column measured once per setting: exactly (v, 0)
        mean, std = values[0], (0.0 if len(values) > 1 else float("nan"))
      else:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
      agg[key] = (mean, std)
    out.append(agg)
  return out


def _numeric(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(key: str, value: Tuple[float, float]) -> str:
  mean, std = value
  pct = key.startswith(("mIoU", "mAcc", "aAcc", "mDice", "IoU."))
  scale, fmt = (100.0, "{:.2f}") if pct else (1.0, "{:.4g}")
  text = fmt.format(mean * scale)
  return text if math.isnan(std) or std == 0 else f"{text} ± {fmt.format(std * scale)}"


def pareto_front(table: Sequence[Dict[str, Any]], x_key: str, y_key: str,
                 better: str) -> List[Dict[str, Any]]:
  """The rows of `table` (aggregate's) that no other row beats on both means: y higher, and x
  higher or lower as `better` says; at least as good on both and better on one beats. Sorted
  by x, best x first. Means only: the caller states the spread beside it."""
  sign = 1.0 if better == "higher" else -1.0
  points = [(sign * r[x_key][0], r[y_key][0], r) for r in table if x_key in r and y_key in r]
  front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q[:2] != p[:2]
                                        for q in points)]
  return [r for _, _, r in sorted(front, key=lambda p: -p[0])]


def markdown(study: Study, scale: str, table: Sequence[Dict[str, Any]]) -> str:
  columns = [k for k in dict.fromkeys(k for r in table for k in r) if k not in ("setting", "n")]
  lines = [f"# {study.name} ({scale})", "", study.description.strip(), "",
           "Mean ± sample std over seeds (a bare value: every seed gave it, as the columns "
           "measured once per setting do); IoU/accuracy in %. Written by `segjax.tools.sweep` "
           "from the runs' eval_results.json.", "",
           "| setting | seeds | " + " | ".join(columns) + " |",
           "|---|---|" + "---|" * len(columns)]
  for r in table:
    cells = [_cell(k, r[k]) if k in r else "" for k in columns]
    lines.append(f"| {r['setting']} | {r['n']} | " + " | ".join(cells) + " |")
  for x_key, y_key in study.plots:
    if x_key in study.fronts:
      front = pareto_front(table, x_key, y_key, study.fronts[x_key])
      lines += ["", f"Pareto front of {y_key} (higher) against {x_key} "
                f"({study.fronts[x_key]}), on the means: "
                + ", ".join(r["setting"] for r in front) + "."]
  return "\n".join(lines) + "\n"


def plot(study: Study, table: Sequence[Dict[str, Any]], out_dir: str) -> List[str]:
  """One PNG per (x, y) of study.plots: y's mean with std error bars against x (a column, or
  "setting" for a labelled axis), and a dashed line through the Pareto front where
  study.fronts names x."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  written = []
  for x_key, y_key in study.plots:
    points = [r for r in table if y_key in r and (x_key == "setting" or x_key in r)]
    if not points:
      continue
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ys = [r[y_key][0] for r in points]
    errs = [0.0 if math.isnan(r[y_key][1]) else r[y_key][1] for r in points]
    if x_key == "setting":
      xs = list(range(len(points)))
      ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=4)
      ax.set_xticks(xs, [r["setting"] for r in points], rotation=20)
    else:
      xs = [r[x_key][0] for r in points]
      ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=4)
      for x, y, r in zip(xs, ys, points):
        ax.annotate(r["setting"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
      if x_key in study.fronts:
        front = pareto_front(points, x_key, y_key, study.fronts[x_key])
        ax.plot([r[x_key][0] for r in front], [r[y_key][0] for r in front], "--", color="C1",
                label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.set_title(study.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{y_key}_vs_{x_key}.png".replace("/", "_"))
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
  return written


def report(study: Study, scale: str, runs: Sequence[Run], out_dir: str) -> List[Dict]:
  """results.jsonl, results.md and the plots from the finished runs among `runs`, and from
  the recorded rows of those whose workdirs are gone (see `recorded`). The measured columns
  are measured again where their cache is gone, so they all come from one machine."""
  rows = []
  measured: Dict[str, Dict[str, Any]] = {}
  carried = recorded(study, scale, runs, out_dir)
  for run in runs:
    if finished(run.workdir):
      run_rows = [result_row(study, scale, run, evaluation)
                  for evaluation in study.evaluations or (None,)
                  if evaluation is None or os.path.exists(evaluation_path(run, evaluation))]
    else:
      run_rows = carried.get((run.setting.label, run.seed), [])
    if run_rows and run.setting.label not in measured:
      measured[run.setting.label] = measure(study, run)
    rows.extend({**r, **measured.get(run.setting.label, {})} for r in run_rows)
  if not rows:
    raise RuntimeError(f"sweep: no finished run of {study.name!r} at scale {scale!r}")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  table = aggregate(rows)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(markdown(study, scale, table))
  plot(study, table, out_dir)
  return rows


def launch_lines(runs: Sequence[Run], launch: str,
                 evaluations: Sequence[Setting] = ()) -> List[str]:
  """The launch.sh command of each run (and of each of its evaluations, which copy
  eval_step<N>.json by hand): `tpu:NAME:ZONE:ACCELERATOR`, one VM, one after the other (a
  script the user reviews and runs)."""
  parts = launch.split(":")
  if len(parts) != 4 or parts[0] != "tpu" or not all(parts[1:]):
    raise ConfigError(f"--launch must be local or tpu:NAME:ZONE:ACCELERATOR, got {launch!r}")
  _, name, zone, accel = parts
  lines = []
  for r in runs:
    lines.append(shlex.join(["./launch.sh", "tpu", name, zone, accel, r.config, r.workdir,
                             *override_flags(r.overrides)]))
    lines.extend(shlex.join(["./launch.sh", "tpu", name, zone, accel, r.config, r.workdir,
                             *override_flags(r.overrides), "--mode=evaluate",
                             *override_flags(e.overrides.items())]) for e in evaluations)
  return lines


def main_with(study: Study, script: str) -> None:
  runs = plan(study, FLAGS.scale, FLAGS.runs, FLAGS.seeds, FLAGS.only, FLAGS.set)
  every_run = plan(study, FLAGS.scale, FLAGS.runs, FLAGS.seeds, None, FLAGS.set)
  out_dir = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(script)), study.name,
                                      FLAGS.scale)
  if FLAGS.launch != "local":
    print("\n".join(launch_lines(runs, FLAGS.launch, study.evaluations)))
    return
  if not FLAGS.collect:
    carried = recorded(study, FLAGS.scale, runs, out_dir)
    previous = signal.signal(signal.SIGTERM, _stop)
    for i, run in enumerate(runs):
      if finished(run.workdir):
        print(f"[{i + 1}/{len(runs)}] {run.setting.label} seed {run.seed}: finished", flush=True)
        continue
      if (run.setting.label, run.seed) in carried:
        print(f"[{i + 1}/{len(runs)}] {run.setting.label} seed {run.seed}: recorded in "
              f"{out_dir}/results.jsonl (its workdir is gone)", flush=True)
        continue
      print(f"[{i + 1}/{len(runs)}] {run.setting.label} seed {run.seed}: running "
            f"(log {run.log})", flush=True)
      start = time.time()
      try:
        execute(run)
      except (Stopped, KeyboardInterrupt):
        sys.exit(f"sweep: stopped during {run.workdir} (its checkpoint and time are kept; the "
                 "same command resumes the study)")
      print(f"  done in {(time.time() - start) / 60:.1f} min", flush=True)
    signal.signal(signal.SIGTERM, previous)
    for run in runs:
      if (run.setting.label, run.seed) in carried:
        continue
      for evaluation in study.evaluations:
        if not os.path.exists(evaluation_path(run, evaluation)):
          print(f"{run.setting.label} seed {run.seed}: evaluating {evaluation.label}", flush=True)
          evaluate(run, evaluation)
  rows = report(study, FLAGS.scale, every_run, out_dir)
  print(f"{len(rows)} run(s) reported in {out_dir}/results.md")


def main(study: Study) -> None:
  """The entry point of an experiments/ script: parses the flags above and runs the study."""
  script = sys.argv[0]
  app.run(lambda argv: main_with(study, script) if len(argv) == 1 else
          sys.exit(f"unexpected arguments {argv[1:]}"))


def _read_json(path: str, default):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def _write_json(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f)
  os.replace(tmp, path)
