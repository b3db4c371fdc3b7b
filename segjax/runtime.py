"""What a run sets up about the machine before it compiles anything: the persistent
compilation cache, and a start-up line naming the backend with warnings about choices that
are slow on it.

The cache: XLA compiles every jitted program of a run (the train step, the evaluation
forward per test size, ...), which takes 10-60 s for the larger models. JAX can keep the
compiled executables on disk, keyed by the program and the backend, so a second run of the
same config, a resume after preemption or `--mode=evaluate` loads them in well under a second
each. segjax turns the cache on by default, in `<workdir's parent>/.jax_cache` (runs of one
project share it; a gs:// workdir gives a gs:// cache all hosts of a pod see), or in
`config.compile_cache_dir`; `compile_cache_dir="off"` disables it. When the environment already
names one (JAX_COMPILATION_CACHE_DIR, e.g. the test suite's shared cache) and the config does
not, the environment's is used.
"""
import os
from typing import Optional

import jax
from absl import logging
from etils import epath

from segjax.errors import warn

CACHE_DIR_NAME = ".jax_cache"
# Programs that compile faster than this are not written (every small helper program would
# cost a file write and a cache lookup for little gain). jax's default is 1 s.
MIN_COMPILE_SECONDS = 0.2


def compile_cache_dir(config, workdir: str) -> Optional[str]:
  """Where this run keeps compiled programs (None: no cache)."""
  chosen = (config.get("compile_cache_dir", "") if config is not None else "") or ""
  if chosen == "off":
    return None
  if chosen:
    return chosen
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  parent = epath.Path(workdir).parent
  return str(parent / CACHE_DIR_NAME)


def enable_compile_cache(config, workdir: str) -> Optional[str]:
  """Turns JAX's persistent compilation cache on for this process; returns its directory.

  An unusable directory (read-only, full) is a warning, not an error: the run then compiles
  as it would without a cache.
  """
  path = compile_cache_dir(config, workdir)
  if path is None:
    jax.config.update("jax_enable_compilation_cache", False)
    logging.info("persistent compilation cache off (compile_cache_dir='off')")
    return None
  try:
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    warn(f"cannot create the compilation cache {path} ({e.strerror or e}); compiling "
         "without it (set --config.compile_cache_dir=DIR or 'off')")
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("persistent compilation cache: %s", path)
  return path


def _model_fields(tree, key):
  """Every value of `key` anywhere in the (nested) config.model dict."""
  if isinstance(tree, dict):
    for k, v in tree.items():
      if k == key:
        yield v
      yield from _model_fields(v, key)
  elif isinstance(tree, (list, tuple)):
    for v in tree:
      yield from _model_fields(v, key)


def check_backend(config) -> str:
  """Logs the backend and device count; warns about config choices slow on this backend.

  Returns the line it logged. The warnings name the field to change; nothing is changed
  silently (a config is an experiment's record).
  """
  backend = jax.default_backend()
  kinds = sorted({d.device_kind for d in jax.devices()})
  line = (f"backend {backend} ({', '.join(kinds)}): {jax.device_count()} device(s), "
          f"{jax.local_device_count()} on this host, {jax.process_count()} host(s)")
  logging.info("%s", line)
  if config is None:
    return line
  model = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  impls = set(_model_fields(model, "dwconv_impl")) | set(_model_fields(model, "depthwise_impl"))
  if backend == "cpu" and "xla" in impls:
    warn("dwconv_impl='xla' is the slow depthwise convolution on CPU (2.4x slower SegFormer-B1 "
         "train step, README *Performance*); 'auto' picks the fast one per backend")
  if backend != "cpu" and "shift" in impls:
    warn(f"dwconv_impl='shift' is meant for CPU; on {backend} 'auto' (XLA's grouped "
         "convolution) is the usual choice")
  dtypes = set(_model_fields(model, "dtype"))
  if backend == "cpu" and "bfloat16" in dtypes:
    # Measured (2026-12-07, 2-core CPU, experiments/bf16.py --scale=paper): the whole
    # 1000-step quickstart, 3 seeds, mIoU 79.3 +- 2.7 (float32) vs 79.7 +- 1.1 (bfloat16):
    # means 0.004 apart, paired differences -2.4 / +3.8 / -0.2 points (seed noise of the
    # float32 runs' own size); 9.0 vs 8.6 min a run. At 300 steps: 61.6 +- 6.1 vs 61.2 +- 5.5.
    # (Before segjax.models.precision summed parameter gradients in float32, bf16 reached
    # 0.16.) Equal accuracy, no speed gain on CPU.
    warn("model dtype bfloat16 on CPU is no faster than float32 (the quickstart: 8.6 vs 9.0 "
         "min a run; mIoU 79.7 vs 79.3, equal within the seed spread, experiments/bf16/); "
         "float32 is the CPU default")
  return line
