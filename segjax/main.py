"""Entry point: python -m segjax.main --config=configs/X.py --workdir=DIR [--mode=...]

  --mode=train     train (resuming from DIR if it holds a checkpoint), evaluating periodically
  --mode=evaluate  evaluate config.eval.checkpoint (latest | best | step) of DIR
  --mode=predict   label/colour/overlay PNGs for config.predict.input -> config.predict.output

Any config field can be overridden: --config.train.batch_size=16. Without --config, evaluate
and predict use the config saved with the checkpoint in DIR. Bad input ends with one line
`error: ...` (exit status 2) instead of a traceback.
"""
import logging as py_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF is only tf.data here; hush its C++ logs

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"], "What to do.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).")


class _QuietLibraries(py_logging.Filter):
  """Drops INFO records of orbax (dozens per checkpoint) so the progress lines stay readable."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def run(config, workdir: str, mode: str):
  # Imported here so `--help` and flag errors do not pay for importing JAX and TF.
  import jax
  import tensorflow as tf

  from segjax import checkpoint as ckpt_lib
  from segjax import evaluate, predict, train
  from segjax.errors import ConfigError

  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep TF off the accelerators
  if config is None:
    if mode == "train":
      raise ConfigError("--config is required for --mode=train")
    checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
    config = checkpointer.saved_config("latest")
    checkpointer.close()
    logging.info("using the config saved in %s", workdir)
  logging.info("segjax %s on %s: %d device(s), process %d/%d", mode, jax.default_backend(),
               jax.device_count(), jax.process_index(), jax.process_count())
  if mode == "train":
    return train.train_and_evaluate(config, workdir)
  if mode == "evaluate":
    return evaluate.evaluate_workdir(config, workdir)
  return predict.predict_folder(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from segjax import parallel
  from segjax.errors import SegjaxError
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if not FLAGS.workdir:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    run(FLAGS.config, os.path.expanduser(FLAGS.workdir), FLAGS.mode)
  except SegjaxError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def cli():
  """Runs main; a bad --config.KEY override becomes one error line, not a flags traceback."""
  try:
    app.run(main)
  except flags.Error as e:  # raised before absl prints usage for override errors
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
