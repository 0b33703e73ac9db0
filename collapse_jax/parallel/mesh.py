"""Device mesh and the shardings of the loop's arrays.

The mesh has one ``data`` axis over every device (of every host). Pool rows are sharded on
it; model states, tasks and keys are replicated. Arrays in the loop carry a leading seed
axis, so a pool leaf ``[seeds, capacity, ...]`` is split along its second axis.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def check(num_data: int) -> str | None:
  """Why a ``num_data``-device data axis cannot be built here (one sentence), or None."""
  available = jax.device_count()
  if num_data == -1 or 1 <= num_data <= available:
    return None
  return (f"mesh.data={num_data} does not fit the {available} device"
          f"{'s' * (available != 1)} of this machine; give 1 to {available}, or -1 for all.")


def make_mesh(num_data: int = -1) -> Mesh:
  """A 1-axis ``data`` mesh over ``num_data`` devices (-1: all devices)."""
  problem = check(num_data)
  if problem:
    raise ValueError(problem)
  count = jax.device_count() if num_data == -1 else num_data
  # Auto axes: shardings are fixed at the jit boundary and XLA propagates them inside,
  # so model code needs no sharding annotations.
  return jax.make_mesh((count,), ("data",), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:count])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def rows(mesh: Mesh) -> NamedSharding:
  """Sharding of ``[seeds, rows, ...]`` arrays: rows split over ``data``."""
  return NamedSharding(mesh, P(None, "data"))
