"""Training loss, learning rate and evaluation mIoU over steps, for one run or several.

  python -m segjax.tools.plot_curves --workdir=runs/a [runs/b ...] --output=curves.png

Loss and lr come from each workdir's TensorBoard events (train/loss, train/lr), mIoU from its
eval_history.jsonl. Runs are drawn in one figure (one colour per run) to compare them.
"""
import glob
import json
import os
from typing import Dict, List, Tuple

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Flags are defined only when run as a program, so tools import side by side."""
  flags.DEFINE_multi_string("workdir", None, "Workdir(s) of training runs (repeat or list them).")
  flags.DEFINE_string("output", "curves.png", "PNG to write.")

Curve = List[Tuple[int, float]]


def read_scalars(workdir: str, tags=("train/loss", "train/lr")) -> Dict[str, Curve]:
  """{tag: [(step, value)]} from the TensorBoard event files directly in workdir."""
  import tensorflow as tf
  out = {t: {} for t in tags}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag in out:
          if value.HasField("tensor"):
            v = float(tf.make_ndarray(value.tensor))
          else:
            v = float(value.simple_value)
          out[value.tag][int(event.step)] = v  # a resumed run re-logs a step: keep the last
  return {t: sorted(points.items()) for t, points in out.items()}


def read_eval(workdir: str) -> Curve:
  path = os.path.join(workdir, "eval_history.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [(e["step"], e["mIoU"]) for e in map(json.loads, f) if e.get("mIoU") is not None]


def plot(runs: Dict[str, Dict[str, Curve]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for name, curves in runs.items():
    for ax, key in zip(axes, ("train/loss", "train/lr", "eval/mIoU")):
      points = curves.get(key, [])
      if points:
        ax.plot(*zip(*points), label=name, marker="o" if key == "eval/mIoU" else None)
  for ax, title in zip(axes, ("training loss", "learning rate", "eval mIoU")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_yscale("log")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  workdirs = (FLAGS.workdir or []) + argv[1:]  # --workdir=a b c: extra ones arrive as argv
  if not workdirs:
    raise app.UsageError("--workdir=DIR [DIR2 ...] is required")
  runs = {}
  for w in workdirs:
    if not os.path.isdir(w):
      print(f"error: {w} is not a directory")
      raise SystemExit(2)
    curves = read_scalars(w)
    curves["eval/mIoU"] = read_eval(w)
    if not any(curves.values()):
      print(f"error: {w} holds no TensorBoard events or eval_history.jsonl")
      raise SystemExit(2)
    runs[w.rstrip("/")] = curves
  plot(runs, FLAGS.output)
  print(f"wrote {FLAGS.output}: " + ", ".join(
      f"{w} ({len(c['train/loss'])} loss points, {len(c['eval/mIoU'])} evaluations)"
      for w, c in runs.items()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
