"""The row-normalised confusion matrix of an evaluation, as a plot.

  python -m segjax.tools.confusion_matrix --workdir=runs/b1 --output=cm.png [--step=N]

Reads <workdir>/eval_step<N>.json (written by --mode=evaluate) or, without --step, the
training run's latest eval_results.json. Rows are ground truth, normalised to sum to 1
(the recall of each class is on the diagonal); classes absent from the ground truth are
an empty row.
"""
import json
import os

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Flags are defined only when run as a program, so tools import side by side."""
  flags.DEFINE_string("workdir", None, "Workdir of a run or an evaluation.")
  flags.DEFINE_string("output", "confusion_matrix.png", "PNG to write.")
  flags.DEFINE_integer("step", None, "Plot eval_step<N>.json instead of eval_results.json.")


def load(workdir: str, step=None):
  """(matrix int64, class names, step) of an evaluation saved in workdir."""
  name = f"eval_step{step}.json" if step is not None else "eval_results.json"
  path = os.path.join(workdir, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: run an evaluation first (--mode=evaluate)")
  with open(path) as f:
    saved = json.load(f)
  if "confusion_matrix" not in saved:
    raise ValueError(f"{path} holds no confusion_matrix (written by an older segjax); "
                     "re-run --mode=evaluate")
  return np.asarray(saved["confusion_matrix"], np.int64), saved["class_names"], saved["step"]


def normalise(cm: np.ndarray) -> np.ndarray:
  rows = cm.sum(1, keepdims=True)
  return np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)


def plot(cm, names, path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = len(names)
  size = max(4.0, 0.35 * n + 2)
  fig, ax = plt.subplots(figsize=(size, size))
  im = ax.imshow(normalise(cm), cmap="viridis", vmin=0, vmax=1)
  ax.set_xticks(range(n), names, rotation=90, fontsize=7 if n > 30 else 9)
  ax.set_yticks(range(n), names, fontsize=7 if n > 30 else 9)
  ax.set_xlabel("prediction")
  ax.set_ylabel("ground truth")
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir=DIR is required")
  try:
    cm, names, step = load(FLAGS.workdir, FLAGS.step)
  except (OSError, ValueError) as e:
    print(f"error: {e}")
    raise SystemExit(2)
  plot(cm, names, FLAGS.output, f"{FLAGS.workdir} step {step} (rows sum to 1)")
  print(f"wrote {FLAGS.output} ({len(names)} classes, step {step})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
