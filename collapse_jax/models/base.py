"""The contract every model family implements, and how a family is found by name.

A family lives in ``collapse_jax/models/<name>.py`` and exposes
``build(config, layout, spec)`` (``spec``: the source's `RowSpec`) returning a
`GenerativeModel`, and optionally ``check_config(config, spec) -> str | None``;
``config.model.name`` picks it. Adding a family touches only its module and a config.
"""
from __future__ import annotations

from typing import Any, Protocol

import jax

from collapse_jax import registry
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.loop.pool import Batch, PoolLayout, TrainView

State = Any  # a pytree of arrays


class GenerativeModel(Protocol):
  """Pure functions of arrays: jittable, vmappable over seeds, scannable over generations.

  ``task`` holds the replicate's fixed problem arrays (a fixed design, true parameters)
  and its real test set; they stay out of the state, which is checkpointed per generation.

  The loop's guarantees (bitwise reruns and resumes, policies compared on equal footing)
  hold if a family keeps these rules; `collapse_jax.testing.check_family` checks them:
    - randomness only from the ``key`` arguments;
    - the pool only through ``view`` (``view.reduce``, ``view.gather`` with the view's
      counts): the pool is padded to the device count and sized by the policy, so reading
      its slots directly makes replace and accumulate fit different generation-0 models;
    - everything the next generation needs is in the returned state (it is checkpointed
      and restored between generations and chunks).
  """

  def init(self, key: jax.Array, task: Task) -> State:
    """A fresh (untrained) state; shapes come from the task's real test data."""

  def fit(self, state: State, view: TrainView, task: Task, key: jax.Array) -> State:
    """Trains on the rows of ``view`` starting from ``state`` (closed form or optax loop)."""

  def sample(self, state: State, task: Task, key: jax.Array, n: int) -> Batch:
    """``n`` synthetic examples: the same pytree structure as the real training rows."""

  def evaluate(self, state: State, task: Task, key: jax.Array) -> dict[str, jax.Array]:
    """Scalar metrics on held-out REAL data (``task.test``)."""


def family(name: str):
  """The module of model family ``name`` (has ``build``, may have ``check_config``)."""
  return registry.lookup("models", name, "model")
