"""`python -m segjax.main ...` with a SIGKILL at one named moment, for fault-injection tests.

    python tests/fault_runner.py MOMENT -- <segjax.main arguments>

The process kills itself (SIGKILL: no handler, no cleanup, like a lost machine) the first
time MOMENT happens in this run:

  batch       while fetching the training batch of the second step of this run
  async_save  right after a checkpoint save started (orbax still writing it in the background)
  eval        in the middle of an evaluation (after its first batch)
  best_save   right after a best-checkpoint save started
  history     while eval_history.jsonl is being replaced (temporary file written, not renamed)
  none        no fault

Nothing in segjax knows about this: the moments are reached by wrapping its functions here.
"""
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MOMENTS = ("batch", "async_save", "eval", "best_save", "history", "none")


def die():
  sys.stdout.flush()
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def inject(moment: str) -> None:
  from segjax import checkpoint, evaluate, workdir
  from segjax.data import pipeline

  if moment == "batch":
    real = pipeline.train_batches

    def batches(*args, **kwargs):
      for i, batch in enumerate(real(*args, **kwargs)):
        if i == 1:
          die()
        yield batch

    pipeline.train_batches = batches
  elif moment in ("async_save", "best_save"):
    name = "save" if moment == "async_save" else "save_best"
    real = getattr(checkpoint.Checkpointer, name)

    def save(self, *args, **kwargs):
      real(self, *args, **kwargs)
      die()

    setattr(checkpoint.Checkpointer, name, save)
  elif moment == "eval":
    real_step = evaluate.Evaluator.__init__

    def init(self, *args, **kwargs):
      real_step(self, *args, **kwargs)
      step, calls = self._step, []

      def counted(*a):
        calls.append(1)
        if len(calls) == 2:
          die()
        return step(*a)

      self._step = counted

    evaluate.Evaluator.__init__ = init
  elif moment == "history":
    real_write = workdir.atomic_write_text

    def write(path, text):
      if str(path).endswith(workdir.HISTORY_FILE):
        tmp = str(path) + ".tmp.killed"
        with open(tmp, "w") as f:
          f.write(text[: len(text) // 2])  # a half-written temporary file
        die()
      real_write(path, text)

    workdir.atomic_write_text = write
  elif moment != "none":
    raise SystemExit(f"unknown moment {moment!r}; one of {MOMENTS}")


if __name__ == "__main__":
  moment, sep, *args = sys.argv[1:]
  assert sep == "--", "usage: fault_runner.py MOMENT -- <segjax.main arguments>"
  os.chdir(REPO)
  inject(moment)
  from segjax import main
  sys.argv = ["segjax.main", *args]
  main.cli()
