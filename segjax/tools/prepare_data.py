"""Writes the TFDS ArrayRecord copy of a registered dataset, read later with data.tfds_dir.

  python -m segjax.tools.prepare_data --dataset=ade20k --manual_dir=data/ade \
      --data_dir=data/tfds [--splits=train,val] [--config=configs/X.py] [--overwrite]

--manual_dir holds the dataset's official files, unpacked, in the layout its reader expects
(what --config.data.root would point to); nothing is downloaded. --config supplies the data
settings a reader needs beyond its root (a folder dataset's data.class_names, the synthetic
sizes); without it configs/common.py's defaults are used, and without --dataset its
data.name. The copy lands in <data_dir>/segjax_<dataset>/1.0.0/; the last line printed is
the flag that makes a run read it. A missing or incomplete download ends with one
`error: ...` line naming the file (exit status 2) and leaves nothing in --data_dir.
"""
import os
import sys
import time

# TF serves only image encoding and tf.data here: hush its C++ logs and its oneDNN banner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "Registered dataset (config.data.name), e.g. ade20k.")
flags.DEFINE_string("manual_dir", None, "Directory holding the dataset's official files.")
flags.DEFINE_string("data_dir", None, "TFDS data dir to write (later --config.data.tfds_dir).")
flags.DEFINE_list("splits", None, "Splits to write (default: all the dataset offers).")
flags.DEFINE_bool("overwrite", False, "Rebuild a copy that already exists.")
flags.DEFINE_integer("workers", 0, "Threads decoding and encoding (0: min(16, cores)).")
flags.DEFINE_bool("debug", False, "Print the traceback of user-facing errors as well.")
config_flags.DEFINE_config_file("config", None, "Config whose data section configures the "
                                "reader (optional).", lock_config=False)


def _size(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return ""


def run(dataset: str, manual_dir: str, data_dir: str, splits, data_cfg, overwrite: bool,
        workers: int) -> None:
  from segjax.data import tfds

  start = time.perf_counter()
  result = tfds.prepare(dataset, os.path.expanduser(manual_dir), os.path.expanduser(data_dir),
                        splits=splits, data_cfg=data_cfg, overwrite=overwrite, workers=workers)
  seconds = time.perf_counter() - start
  if result["reused"]:
    print(f"{result['path']} already holds {dataset}; kept as is (--overwrite rebuilds it)")
  for split, n in result["examples"].items():
    print(f"{split:<12} {n:>8} examples")
  print(f"{_size(result['bytes'])} in {result['path']}, {seconds:.1f} s")
  print(f"read it with: --config.data.name={dataset} "
        f"--config.data.tfds_dir={os.path.abspath(os.path.expanduser(data_dir))}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from segjax.errors import SegjaxError
  if not FLAGS.debug:
    logging.set_verbosity(logging.WARNING)  # TFDS's INFO lines name its temporary dirs
  try:
    config = FLAGS.config
    data_cfg = config.data if config is not None else None
  except OSError as e:  # config_flags defers a failed load to the first access
    _fail(f"cannot load --config: {str(e).splitlines()[-1].strip()}")
  dataset = FLAGS.dataset or (data_cfg.name if data_cfg is not None else None)
  for flag, value in (("--dataset", dataset), ("--manual_dir", FLAGS.manual_dir),
                      ("--data_dir", FLAGS.data_dir)):
    if not value:
      _fail(f"{flag} is required")
  try:
    run(dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.splits, data_cfg, FLAGS.overwrite,
        FLAGS.workers)
  except SegjaxError as e:
    _fail(str(e), traceback=FLAGS.debug)
  except OSError as e:  # an unwritable --data_dir, a full disk
    _fail(f"{e.filename or FLAGS.data_dir}: {e.strerror or e}", traceback=FLAGS.debug)
  except KeyboardInterrupt:
    _fail("interrupted; the partial copy was removed (an earlier copy is untouched)", 130)


def _fail(message: str, status: int = 2, traceback: bool = False) -> None:
  if traceback:
    import traceback as tb
    tb.print_exc()
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def _parse_flags(argv):
  """absl flag parsing where a mistake is one `error:` line and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # config_flags overrides
    print(f"error: bad --config override: {e}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
