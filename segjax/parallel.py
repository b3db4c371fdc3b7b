"""Device mesh, shardings, multi-host start-up and the watch over the other hosts.

Data parallelism over every device of every host is one mesh axis, "data". Parameters and
optimizer state are replicated; batches are split along their first axis. Under jit, XLA
inserts the cross-device reductions, so BatchNorm statistics and the loss mean are global
whatever the device count (no SyncBN switch, no single-device special case).

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
import sys
import threading
import time
from typing import Dict, Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segjax.errors import ConfigError

DATA_AXIS = "data"


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


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"{what}={batch_size} must be a multiple of the {n} devices "
                      f"({jax.process_count()} host(s))")


def global_batch(local: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
  """Assembles each host's slice of the batch into one array sharded over the mesh."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
