"""Device mesh, shardings, multi-host start-up and the watch over the other hosts.

The mesh has two axes, ("data", "fsdp"), of sizes (devices / parallel.fsdp, parallel.fsdp).
Batches are split along their first axis over every device (both axes). With fsdp = 1 (the
default) that is plain data parallelism: parameters and optimizer state are replicated. With
fsdp = k each parameter and optimizer-state array of at least `parallel.fsdp_min_size`
elements is split k ways along one of its dimensions (`state_shardings`: the largest one that
k divides, or the one a `parallel.fsdp_rules` entry names), so k devices together hold one
copy: under jit XLA gathers a layer's weights where they are used and reduce-scatters their
gradients (fully sharded data parallelism, ZeRO-3). Either way XLA inserts the cross-device
reductions, so BatchNorm statistics and the loss mean are global whatever the device count
(no SyncBN switch, no single-device special case).

On several hosts a process that fails or dies would leave the others waiting forever in
their next collective. `PeerWatch` prevents that through the coordination service's
key-value store: a failing process posts its one-line error there, every process posts a
heartbeat counter, and a thread in each process ends it with one `error:` line when another
process has failed, has stopped beating for `peer_timeout` seconds, or the coordinator
(process 0) is gone. (When process 0 itself dies, JAX's own client usually ends the other
processes first, within about a second, with "Terminating process because the JAX
distributed service detected fatal errors"; its error callback cannot be replaced from
Python in this JAX version. Likewise, when a process is killed on a host that stays up, its
sockets close, and Gloo, the CPU collectives, may abort a peer that was mid-collective with
its own "terminate called after throwing an instance of 'gloo::IoException' ... Connection
closed by peer" (a known Gloo behaviour) before the heartbeat runs out. A CI machine once
saw that SIGABRT seconds after a SIGKILL; on the 2-core development machine Gloo waits and
the heartbeat ends the peer.)
"""
import os
import re
import sys
import threading
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segjax.errors import ConfigError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch's first axis is split over every device


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           peer_timeout: float = 60.0) -> Optional["PeerWatch"]:
  """Starts jax.distributed when asked explicitly or when running on a Cloud TPU VM pod, and
  the PeerWatch (returned; None on one host).

  On a TPU VM, JAX discovers the coordinator from the TPU metadata, so every worker runs the
  same command. Elsewhere pass all three flags (e.g. 2 processes on one machine in tests).
  `peer_timeout` stays below JAX's own heartbeat timeout (100 s), which aborts the process
  with a C++ stack trace instead of a message.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ConfigError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"):
    jax.distributed.initialize()
  else:
    return None
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  if jax.process_count() == 1:
    return None
  watch = PeerWatch(peer_timeout)
  watch.start()
  return watch


_FAILURE_KEY = "segjax/failure"
_ALIVE_DIR = "segjax/alive/"  # <dir><process index> = heartbeat counter
_DONE_DIR = "segjax/done/"  # <dir><process index> = "1" once the process ends normally


class PeerWatch(threading.Thread):
  """A daemon thread ending this process when another one failed or died (module docstring).

  Three key-value calls per second and process, whatever the number of processes.
  """

  def __init__(self, peer_timeout: float, interval: float = 1.0):
    super().__init__(name="segjax-peer-watch", daemon=True)
    from jax._src import distributed  # the client of jax.distributed's coordination service
    self.client = distributed.global_state.client
    self.me, self.count = jax.process_index(), jax.process_count()
    self.timeout, self.interval = peer_timeout, interval
    self._stop = threading.Event()

  def _try_get(self, key: str) -> Optional[str]:
    try:
      return self.client.key_value_try_get(key)
    except Exception as e:  # NOT_FOUND is an exception too; anything else is a lost service
      if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
        return None
      raise

  def _dir(self, prefix: str) -> Dict[int, str]:
    return {int(k.rsplit("/", 1)[-1]): v for k, v in self.client.key_value_dir_get(prefix)}

  def run(self):
    others = [p for p in range(self.count) if p != self.me]
    seen = {p: (None, time.monotonic()) for p in others}
    beat, unreachable_since = 0, None
    while not self._stop.wait(self.interval):
      try:
        beat += 1
        self.client.key_value_set(f"{_ALIVE_DIR}{self.me}", str(beat), allow_overwrite=True)
        failure = self._try_get(_FAILURE_KEY)
        if failure is not None and not failure.startswith(f"process {self.me} "):
          self._exit(f"stopping because {failure}", 2)
        alive, done, now = self._dir(_ALIVE_DIR), self._dir(_DONE_DIR), time.monotonic()
        for p in others:
          if p in done:
            continue
          if alive.get(p) != seen[p][0]:
            seen[p] = (alive.get(p), now)
          elif now - seen[p][1] > self.timeout:
            self._exit(f"process {p} of {self.count} has sent no heartbeat for "
                       f"{self.timeout:.0f}s (crashed, killed, or its host is down); stopping "
                       "this process too (resume from the last checkpoint)", 1)
        unreachable_since = None
      except Exception as e:  # the coordination service (in process 0) is unreachable
        if self._stop.is_set():
          return
        unreachable_since = unreachable_since or time.monotonic()
        if time.monotonic() - unreachable_since > min(self.timeout, 10.0):
          self._exit("lost the coordinator of this multi-host run (process 0 crashed, was "
                     f"killed, or its host is down: {str(e).splitlines()[0][:120]}); stopping "
                     "this process too (resume from the last checkpoint)", 1)

  def _exit(self, message: str, status: int) -> None:
    if self._stop.is_set():
      return
    print(f"error: {message}", file=sys.stderr, flush=True)
    self._mark_done()
    os._exit(status)

  def _mark_done(self) -> None:
    try:
      self.client.key_value_set(f"{_DONE_DIR}{self.me}", "1", allow_overwrite=True)
    except Exception:  # the service may already be gone
      pass

  def stop(self) -> None:
    """Normal end of this process: peers no longer expect its heartbeat."""
    self._mark_done()
    self._stop.set()

  def await_verdict(self) -> None:
    """Called when a cross-process operation raised (e.g. Gloo's "Connection closed by
    peer"): such errors arrive as soon as a peer dies or exits, before its heartbeat is
    overdue or its own error is read. Give the watch one timeout to name the cause; it then
    ends the process with its own line. Returns if it found nothing (a genuine error)."""
    deadline = time.monotonic() + self.timeout + 3 * self.interval
    while self.is_alive() and time.monotonic() < deadline:
      time.sleep(self.interval / 4)

  def announce_failure(self, message: str, linger: float = 15.0) -> None:
    """Posts this process's one-line error for the others, then stops watching. Process 0
    hosts the key-value store, so it lingers until the others have read it and left (or
    `linger` seconds passed) before it may exit."""
    try:
      self.client.key_value_set(_FAILURE_KEY, f"process {self.me} failed: {message}")
    except Exception:  # another process failed first, or the service is gone
      pass
    self.stop()
    if self.me != 0:
      return
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline:
      try:
        if len(self._dir(_DONE_DIR)) >= self.count:
          return
      except Exception:  # nobody left to read it
        return
      time.sleep(0.2)


def sync_hosts(name: str) -> None:
  """A barrier over all processes (no-op with one): e.g. process 0 changed shared files."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def all_hosts_agree(flag: bool) -> bool:
  """True when `flag` is true on every process (no-op with one)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


def make_mesh(devices=None, fsdp: int = 1) -> Mesh:
  """The ("data", "fsdp") mesh over `devices` (default: all devices of all hosts).

  Consecutive devices form an fsdp group, so with fsdp dividing the devices per host the
  gathers of sharded weights stay within a host (jax.devices() lists each host's devices
  together).
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  if fsdp < 1 or devices.size % fsdp:
    raise ConfigError(f"parallel.fsdp={fsdp} must be a positive divisor of the "
                      f"{devices.size} devices ({jax.process_count()} host(s))")
  return Mesh(devices.reshape(devices.size // fsdp, fsdp), BATCH_AXES)


def mesh_for(config) -> Mesh:
  """make_mesh with the config's parallel.fsdp (1 when the config has no parallel section)."""
  return make_mesh(fsdp=int(config.get("parallel", {}).get("fsdp", 1)))


def _path_name(path) -> str:
  """A tree path as "params/backbone/block1_0/attn/q/kernel" (the names rules match)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return "/".join(parts)


def fsdp_dim(name: str, shape: Sequence[int], fsdp: int, min_size: int,
             rules: Sequence[Tuple[str, Optional[int]]] = ()) -> Optional[int]:
  """The dimension an array is split along over the fsdp axis, or None (replicated).

  The first rule (regex, dim) whose regex `re.search`es the array's path name decides: dim
  None keeps it replicated, otherwise dim (negative counts from the end) must be divisible
  by fsdp. Without a matching rule: arrays smaller than min_size elements stay replicated
  (biases, norms, scalars: gathering them costs more than they save), others split along
  their largest dimension divisible by fsdp (ties: the last one), or stay replicated when
  none is.
  """
  if fsdp == 1:
    return None
  for pattern, dim in rules:
    if re.search(pattern, name):
      if dim is None:
        return None
      d = dim % len(shape) if shape else None
      if d is None or shape[d] % fsdp:
        raise ConfigError(f"parallel.fsdp_rules entry ({pattern!r}, {dim}) splits {name} "
                          f"{tuple(shape)} along a dimension that fsdp={fsdp} does not divide")
      return d
  if int(np.prod(shape, dtype=np.int64)) < min_size:
    return None
  divisible = [d for d in range(len(shape)) if shape[d] % fsdp == 0]
  return max(divisible, key=lambda d: (shape[d], d)) if divisible else None


def state_shardings(tree: Any, mesh: Mesh, config) -> Any:
  """NamedShardings for a tree of arrays or ShapeDtypeStructs (params, optimizer state,
  checkpoint targets) under config.parallel: replicated unless fsdp_dim splits them.

  A rule of shapes and names only, so a parameter and its optimizer moments (whose paths
  end in the parameter's path) get the same sharding.
  """
  cfg = config.get("parallel", {})
  fsdp = mesh.shape[FSDP_AXIS]
  min_size = int(cfg.get("fsdp_min_size", 2 ** 14))
  rules = tuple(tuple(r) for r in cfg.get("fsdp_rules", ()))

  def one(path, x):
    d = fsdp_dim(_path_name(path), x.shape, fsdp, min_size, rules)
    if d is None:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*([None] * d + [FSDP_AXIS])))

  return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"{what}={batch_size} must be a multiple of the {n} devices "
                      f"({jax.process_count()} host(s))")


def global_batch(local: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
  """Assembles each host's slice of the batch into one array sharded over the mesh."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
