"""The contract every model family implements, and how a family is found by name.

A family lives in ``collapse_jax/models/<name>.py`` and exposes ``build(config, layout)``
returning a `GenerativeModel`; ``config.model.name`` picks it. Adding a family touches only
its module and a config.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

import jax

from collapse_jax.data.source import Task
from collapse_jax.loop.pool import Batch, PoolLayout, TrainView

State = Any  # a pytree of arrays


class GenerativeModel(Protocol):
  """Pure functions of arrays: jittable, vmappable over seeds, scannable over generations.

  ``task`` holds the replicate's fixed problem arrays (a fixed design, true parameters)
  and its real test set; they stay out of the state, which is checkpointed per generation.
  """

  def init(self, key: jax.Array, task: Task) -> State:
    """A fresh (untrained) state; shapes come from the task's real test data."""

  def fit(self, state: State, view: TrainView, task: Task, key: jax.Array) -> State:
    """Trains on the rows of ``view`` starting from ``state`` (closed form or optax loop)."""

  def sample(self, state: State, task: Task, key: jax.Array, n: int) -> Batch:
    """``n`` synthetic examples: the same pytree structure as the real training rows."""

  def evaluate(self, state: State, task: Task, key: jax.Array) -> dict[str, jax.Array]:
    """Scalar metrics on held-out REAL data (``task.test``)."""


def family_names() -> list[str]:
  import collapse_jax.models as pkg
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if hasattr(importlib.import_module(f"collapse_jax.models.{m.name}"), "build"))


def family(name: str):
  """The module of model family ``name`` (has ``build``, may have ``check_config``)."""
  if name not in family_names():
    raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(family_names())}.")
  return importlib.import_module(f"collapse_jax.models.{name}")
