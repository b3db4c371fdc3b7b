"""Device mesh, shardings and multi-host start-up.

Data parallelism over every device of every host is one mesh axis, "data". Parameters and
optimizer state are replicated; batches are split along their first axis. Under jit, XLA
inserts the cross-device reductions, so BatchNorm statistics and the loss mean are global
whatever the device count (no SyncBN switch, no single-device special case).
"""
import os
from typing import Dict, Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segjax.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Starts jax.distributed when asked explicitly or when running on a Cloud TPU VM pod.

  On a TPU VM, JAX discovers the coordinator from the TPU metadata, so every worker runs the
  same command. Elsewhere pass all three flags (e.g. 2 processes on one machine in tests).
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID"):
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


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
