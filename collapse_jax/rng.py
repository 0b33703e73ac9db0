"""Key derivation: every random draw is named, so results never depend on call order.

A run has one root key per seed replicate. Each use derives its key from the root by a
stream name (``"fit"``, ``"sample"``, ...) and integer indices (generation, step), so a
resumed, re-chunked or re-sharded run draws exactly the same numbers.
"""
import zlib

import jax
import numpy as np


def configure_jax() -> None:
  """The JAX settings every run uses; results depend on them, so launchers, the library's
  entry points and the tests all call this (not an import side effect).

  Partitionable threefry makes XLA:CPU compile each vmapped random draw about 10x slower; a
  run draws in a dozen places. Our keys never depend on array shapes or
  shardings, so the classic counter layout loses nothing.
  """
  jax.config.update("jax_threefry_partitionable", False)


def stream_key(root: jax.Array, stream: str, *indices) -> jax.Array:
  """Returns the key for ``stream`` at ``indices`` (ints or traced int scalars).

  The stream name is hashed with crc32 (stable across processes and Python versions,
  unlike ``hash``).
  """
  key = jax.random.fold_in(root, zlib.crc32(stream.encode()) & 0x7FFFFFFF)
  for index in indices:
    key = jax.random.fold_in(key, index)
  return key


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """Root keys of the replicates, ``[num_seeds, 2]`` uint32.

  Replicate ``s`` is seed ``seed + s``: a run with ``num_seeds=N`` equals the N single
  runs with seeds ``seed, ..., seed + N - 1``. Raw uint32 keys (not typed keys) so that
  checkpoints store them as plain arrays.
  """
  # As host numpy: on several hosts, jit places a host array on the global mesh itself.
  return np.asarray(jax.vmap(jax.random.PRNGKey)(seed + jax.numpy.arange(num_seeds)))
