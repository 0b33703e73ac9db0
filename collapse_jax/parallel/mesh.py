"""Device mesh and the shardings of the loop's arrays (a small strategy, big_vision /
kauldron style: shardings are fixed at the jit boundary, XLA propagates them inside, so
model code carries no sharding annotations).

The mesh has two axes over every device (of every host): ``data`` x ``fsdp``.
  pool rows        split over both axes (every device holds 1 / devices of the pool)
  model states     params, optimizer state and EMA: each large leaf split over ``fsdp``
                   along its largest dimension that divides evenly (fully sharded data
                   parallel); small leaves (< FSDP_MIN_SIZE entries) replicated
  tasks, keys      replicated
  real data        a source's consts: training rows split over both axes, each process
                   loading only its own devices' rows (`place_consts`); the rest replicated
Arrays in the loop carry a leading seed axis, which is never split.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

FSDP_MIN_SIZE = 2 ** 14  # smaller leaves are replicated: gathering them costs more than they weigh


def check(num_data: int, num_fsdp: int = 1) -> str | None:
  """Why a ``num_data`` x ``num_fsdp`` mesh cannot be built here (one sentence), or None."""
  available = jax.device_count()
  devices = f"{available} device{'s' * (available != 1)}"
  if num_fsdp < 1 or available % num_fsdp:
    return (f"mesh.fsdp={num_fsdp} must be a positive divisor of the {devices} of this "
            "machine.")
  if num_data == -1 or 1 <= num_data * num_fsdp <= available:
    return None
  shape = f"mesh.data={num_data}" + (f" x mesh.fsdp={num_fsdp}" if num_fsdp > 1 else "")
  return (f"{shape} does not fit the {devices} of this machine; give mesh.data 1 to "
          f"{available // num_fsdp}, or -1 for all.")


def make_mesh(num_data: int = -1, num_fsdp: int = 1) -> Mesh:
  """A ``data`` x ``fsdp`` mesh (``num_data=-1``: every device not on the fsdp axis)."""
  problem = check(num_data, num_fsdp)
  if problem:
    raise ValueError(problem)
  data = jax.device_count() // num_fsdp if num_data == -1 else num_data
  return jax.make_mesh((data, num_fsdp), ("data", "fsdp"),
                       axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=jax.devices()[:data * num_fsdp])


def from_config(mesh_config) -> Mesh:
  return make_mesh(mesh_config.data, mesh_config.fsdp)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def rows(mesh: Mesh) -> NamedSharding:
  """Sharding of ``[seeds, rows, ...]`` arrays: rows split over every device."""
  return NamedSharding(mesh, P(None, ("data", "fsdp")))


def examples(mesh: Mesh) -> NamedSharding:
  """Sharding of ``[examples, ...]`` arrays (a training batch, a dataset's rows): split
  over every device."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def place_consts(load, num_rows: int | None, mesh: Mesh):
  """A source's consts as global arrays on ``mesh``, each process loading only its share.

  ``load(rows)`` returns the consts with the leaves of ``consts["train"]`` holding training
  rows ``rows = (lo, hi)`` only, or all ``num_rows`` of them for None (what a single process
  asks for). Those leaves are split by rows over every device of the mesh, padded with zero
  rows to a multiple of the device count (sources index them by their own row count, so
  the padding is never read); in a multi-process run each process loads and supplies only
  the rows of its own devices. Every other leaf, and all of a source without training rows
  (``num_rows`` None), is replicated.
  """
  rep = replicated(mesh)
  whole = lambda x: jax.make_array_from_callback(np.shape(x), rep, lambda i: np.asarray(x)[i])
  if num_rows is None:
    return jax.tree.map(whole, load(None))
  padded = -(-num_rows // mesh.size) * mesh.size
  split = examples(mesh)
  spans = [i[0].indices(padded) for i in split.addressable_devices_indices_map((padded,)).values()]
  lo = min((s[0] for s in spans), default=0)
  hi = max((s[1] for s in spans), default=0)
  # The rows of this process's devices (a contiguous range on every usual mesh; else their
  # hull); one process has them all.
  consts = load((min(lo, num_rows), min(hi, num_rows)) if jax.process_count() > 1 else None)

  def device_rows(x, index):  # a device's rows of a loaded leaf, zeros past the last real one
    start, stop, _ = index[0].indices(padded)
    part = x[max(start - lo, 0):max(stop - lo, 0)]
    if len(part) == stop - start:
      return part
    return np.concatenate([part, np.zeros((stop - start - len(part),) + x.shape[1:], x.dtype)])

  split_rows = lambda x: jax.make_array_from_callback(
      (padded,) + np.shape(x)[1:], split, lambda i: device_rows(np.asarray(x), i))
  return {k: jax.tree.map(split_rows if k == "train" else whole, v) for k, v in consts.items()}


def fsdp_spec(shape: tuple[int, ...], num_fsdp: int) -> P:
  """Partition spec of one ``[seeds, ...]`` state leaf: its largest non-seed dimension
  divisible by ``num_fsdp`` split over ``fsdp``; replicated when small or indivisible."""
  if num_fsdp == 1 or int(np.prod(shape[1:], dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  dims = sorted(range(1, len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % num_fsdp == 0:
      return P(*([None] * d + ["fsdp"]))
  return P()


def state_shardings(abstract_state, mesh: Mesh):
  """Shardings of a model state with leaves ``[seeds, ...]`` (see `fsdp_spec`)."""
  n = mesh.shape["fsdp"]
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, n)), abstract_state)
