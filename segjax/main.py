"""Entry point: python -m segjax.main --config=configs/X.py --workdir=DIR [--mode=...]

  --mode=train     train (resuming from DIR if it holds a checkpoint), evaluating periodically
  --mode=evaluate  evaluate config.eval.checkpoint (latest | best | step) of DIR
  --mode=predict   label/colour/overlay PNGs for config.predict.input -> config.predict.output

Any config field can be overridden: --config.train.batch_size=16. Without --config, evaluate
and predict use the config saved in DIR, overrides included (--workdir=DIR --mode=predict
--config.predict.input=photos/ works). Bad input ends with one line
`error: ...` (exit status 2) instead of a traceback (--debug shows the traceback too). On
several hosts, a process that fails posts its error line to the others, which stop with it.
"""
import logging as py_logging
import os
import sys

# TF serves only tf.data here: hush its C++ logs and its oneDNN banner (printed twice per run).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"], "What to do.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).")
flags.DEFINE_float("peer_timeout", 60.0, "Multi-host: seconds without a heartbeat from "
                   "another process before this one stops too (instead of hanging).")
flags.DEFINE_bool("debug", False, "Print the traceback of user-facing errors as well.")


class _QuietLibraries(py_logging.Filter):
  """Drops orbax's INFO records (dozens per checkpoint) so the progress lines stay readable,
  and its ERROR records and asyncio's "exception was never retrieved" (tracebacks from
  background reads and writes): segjax reports a failed save or restore itself, in one line.
  --debug keeps the errors."""

  def __init__(self, keep_errors: bool):
    super().__init__()
    self.keep_errors = keep_errors

  def filter(self, record):
    if record.name == "asyncio" and "exception was never retrieved" in record.getMessage():
      return self.keep_errors  # orbax's abandoned reads of a damaged checkpoint, already named
    if "/orbax/" not in record.pathname:
      return True
    return record.levelno == py_logging.WARNING or (
        record.levelno >= py_logging.ERROR and self.keep_errors)


def run(config, workdir: str, mode: str):
  # Imported here so `--help` and flag errors do not pay for importing JAX and TF.
  import jax
  import tensorflow as tf

  from segjax import checkpoint as ckpt_lib
  from segjax import evaluate, predict, runtime, train
  from segjax.errors import ConfigError

  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep TF off the accelerators
  if config is None:
    if mode == "train":
      raise ConfigError("--config is required for --mode=train")
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
    config = checkpointer.saved_config("latest")
    checkpointer.close()
    logging.info("using the config saved in %s", workdir)
  logging.info("segjax %s, process %d/%d", mode, jax.process_index(), jax.process_count())
  runtime.check_backend(config)
  runtime.enable_compile_cache(config, workdir)
  if mode == "train":
    return train.train_and_evaluate(config, workdir)
  if mode == "evaluate":
    return evaluate.evaluate_workdir(config, workdir)
  return predict.predict_folder(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax
  from segjax import parallel
  from segjax.errors import SegjaxError
  logging.get_absl_handler().addFilter(_QuietLibraries(keep_errors=FLAGS.debug))
  if not FLAGS.workdir:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    config = FLAGS.config
    if config is not None:
      config.keys()
  except OSError as e:  # config_flags defers a failed load to the first access
    detail = " ".join(line.strip() for line in str(e).splitlines()[-3:])
    print(f"error: cannot load --config: {detail}", file=sys.stderr)
    sys.exit(2)
  watch = None
  try:
    watch = parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                            FLAGS.process_id, FLAGS.peer_timeout)
    run(config, os.path.expanduser(FLAGS.workdir), FLAGS.mode)
  except SegjaxError as e:
    _fail(str(e), 2, watch, traceback=FLAGS.debug)
  except KeyboardInterrupt:
    _fail("interrupted (Ctrl-C); the last finished checkpoint is intact", 130, watch,
          traceback=FLAGS.debug)
  except Exception as e:  # a bug: keep its traceback, but do not leave other hosts hanging
    if watch is not None and isinstance(e, jax.errors.JaxRuntimeError):
      logging.info("a cross-process operation failed (%s); checking the other processes",
                   str(e).strip().splitlines()[0][:200] if str(e).strip() else "")
      watch.await_verdict()  # first let the watch say which peer died, if one did
    _fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
          1, watch, traceback=True)
  if watch is not None:
    watch.stop()


def _fail(message: str, status: int, watch, traceback: bool) -> None:
  """One `error:` line (and the traceback if asked), posted to the other hosts, then exit.

  With several hosts the exit skips jax.distributed's shutdown barrier, which would wait
  minutes for processes that are exiting on their own.
  """
  if traceback:
    import traceback as tb
    tb.print_exc()
  print(f"error: {message}", file=sys.stderr, flush=True)
  if watch is None:
    sys.exit(status)
  watch.announce_failure(message)
  sys.stdout.flush()
  os._exit(status)


def _unknown_override(argv):
  """The first --config.KEY=... whose KEY is not in the config file, or None."""
  from segjax.tools.config_file import load_config_file
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return None
  path, _, arg = spec.partition(":")  # config_flags' "file.py:argument" form
  config = load_config_file(path, arg or None)
  for arg in argv:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0]
      node = config
      for part in key.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
          return key
        node = node[part]
  return None


SAVED_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "saved.py")


def _saved_config_for_overrides(argv):
  """--workdir=DIR with --config.* overrides but no --config: the overrides apply to the config
  saved in DIR (configs/saved.py:DIR), the one evaluate/predict would use without them."""
  if any(a.startswith("--config=") or a == "--config" for a in argv):
    return argv
  if not any(a.startswith("--config.") for a in argv):
    return argv
  workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), None)
  if workdir is None or not os.path.isfile(SAVED_CONFIG):
    return argv  # absl then names the override it cannot place
  return argv[:1] + [f"--config={SAVED_CONFIG}:{os.path.expanduser(workdir)}"] + argv[1:]


def parse_flags(argv):
  """absl flag parsing where every mistake is one `error:` line and exit status 2."""
  argv = _saved_config_for_overrides(argv)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags raises these for overrides; name the key when it is unknown.
    key = _unknown_override(argv)
    if key is not None:
      print(f"error: unknown config key '{key}' (from --config.{key}); see the config file "
            "and configs/common.py for the fields", file=sys.stderr)
    else:
      print(f"error: bad --config override: {e}", file=sys.stderr)
  sys.exit(2)


def cli():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
