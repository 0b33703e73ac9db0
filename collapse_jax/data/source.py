"""Real data: the `Source` contract and the per-replicate `Task` it produces.

A source lives in ``collapse_jax/data/<name>.py`` and exposes ``build(data_config)``;
``config.data.source`` picks it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, NamedTuple, Protocol

import jax

Batch = Any


class Task(NamedTuple):
  """What one replicate is measured against.

  Attributes:
    test: held-out real data (a batch) for ``GenerativeModel.evaluate``.
    aux: arrays of the problem itself that models or metrics need, e.g. the fixed design
      and the true weights of linear regression; empty for datasets.
  """
  test: Batch
  aux: dict[str, jax.Array]


class Source(Protocol):
  """Real data for a run. ``consts`` are host arrays (a dataset) shared by all replicates."""

  # Rows available for training, or None for a generative source with no limit.
  num_train: int | None

  def consts(self) -> Any:
    """Arrays passed once into the compiled run (not per replicate)."""

  def task(self, consts: Any, key: jax.Array) -> Task:
    """The replicate's test set and problem arrays."""

  def real(self, consts: Any, task: Task, key: jax.Array, block: jax.Array, n: int) -> Batch:
    """``n`` real training rows; distinct ``block`` indices never share rows."""


def source_names() -> list[str]:
  import collapse_jax.data as pkg
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if hasattr(importlib.import_module(f"collapse_jax.data.{m.name}"), "build"))


def source_module(name: str):
  if name not in source_names():
    raise ValueError(f"Unknown data source {name!r}; choose one of {', '.join(source_names())}.")
  return importlib.import_module(f"collapse_jax.data.{name}")
