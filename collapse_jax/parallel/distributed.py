"""Multi-host runs (TPU pods, GPU clusters): `jax.distributed.initialize`, nothing home-made.

Every host runs the same command. The coordinator comes from flags
(``--coordinator_address --num_processes --process_id``), or from the environment
(``COLLAPSE_JAX_COORDINATOR``, ``COLLAPSE_JAX_NUM_PROCESSES``, ``COLLAPSE_JAX_PROCESS_ID``),
or is auto-detected by JAX on Cloud TPU and under SLURM. One host alone runs as it always
did. After initialisation `jax.devices()` lists every host's devices, the mesh spans them,
Orbax saves collectively and only process 0 writes metrics, plots and logs.
"""
from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from collapse_jax.validate import ConfigError

_CLUSTER_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the run's other processes, if there are any; returns whether it did."""
  env = os.environ
  coordinator_address = coordinator_address or env.get("COLLAPSE_JAX_COORDINATOR")
  if num_processes is None and "COLLAPSE_JAX_NUM_PROCESSES" in env:
    num_processes = int(env["COLLAPSE_JAX_NUM_PROCESSES"])
  if process_id is None and "COLLAPSE_JAX_PROCESS_ID" in env:
    process_id = int(env["COLLAPSE_JAX_PROCESS_ID"])
  if coordinator_address is None:
    slurm_tasks = int(env.get("SLURM_NTASKS", "1"))
    if not any(k in env for k in _CLUSTER_ENV) or ("SLURM_JOB_ID" in env and slurm_tasks < 2):
      return False
    jax.distributed.initialize()  # JAX's own cluster detection (TPU, SLURM, ...)
    return True
  if num_processes is None or process_id is None:
    raise ConfigError("A coordinator address needs --num_processes and --process_id too.")
  if not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id must be in [0, {num_processes}), got {process_id}.")
  # CPU devices of different processes talk through Gloo (tests, CPU clusters); the setting
  # touches only the CPU backend. (Asking which backend is default would start it too
  # early: initialize must come first.)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True


def to_host(tree):
  """A pytree of (possibly sharded, multi-host) arrays as host numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def everywhere(ok: bool) -> bool:
  """Whether ``ok``, each process's own answer, is true on every process (a collective:
  every process calls it, and all get the same answer, so they stop or go on together)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def same_everywhere(text: str) -> bool:
  """Whether every process passed the same ``text`` (a collective, as `everywhere`)."""
  if jax.process_count() == 1:
    return True
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  gathered = multihost_utils.process_allgather(digest)  # [processes, 32]
  return bool(np.all(gathered == gathered[0]))


def shared_token() -> str:
  """A random hex string, process 0's on every process (a collective, as `everywhere`)."""
  words = np.frombuffer(os.urandom(16), np.int32)
  if jax.process_count() > 1:
    words = np.asarray(multihost_utils.broadcast_one_to_all(words))
  return words.astype(np.uint32).tobytes().hex()
