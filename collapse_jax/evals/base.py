"""The evaluator contract: host-side metrics of each generation, declared in the config.

``config.evals`` maps a name to ``{"type": <module in collapse_jax/evals/>, ...options}``.
After each compiled chunk the driver calls every evaluator once per generation, on the host,
with that generation's fitted states of all seeds; what it returns joins the generation's
metrics (and metrics.jsonl). An evaluator may write artifacts (sample grids, story files)
under ``context.workdir``. The driver names no data source and no field: an evaluator reads
what it needs from the context (the loop's model and source, the source's `RowSpec`).

A type is a module exposing ``build(options, context) -> Evaluator`` and, optionally,
``check_config(options, config, spec) -> str | None`` for the one validation pass.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Protocol

import jax
import numpy as np

from collapse_jax import registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
  """What an evaluator may use. ``loop``: the `Loop` (model, source, policy, layout);
  ``consts``: the source's arrays as placed on the mesh (`parallel.mesh.place_consts`:
  global arrays whose training rows may be split over hosts; jit over them)."""
  config: Any
  workdir: pathlib.Path
  loop: Any
  consts: Any


class Evaluator(Protocol):

  def __call__(self, states: Any, tasks: Any, roots: jax.Array, generation: int
               ) -> dict[str, np.ndarray]:
    """Per-seed metrics ``{name: [seeds]}`` of one generation.

    ``states``, ``tasks``: the generation's fitted model states and the replicates' tasks,
    leaves ``[seeds, ...]``; ``roots``: ``[seeds, 2]`` root keys (derive keys with
    ``rng.stream_key(root, <stream>, generation)``).
    """


def names() -> list[str]:
  return registry.names("evals")


def module(type_name: str):
  return registry.lookup("evals", type_name, "evaluator type")


def build_all(config, context: Context) -> dict[str, Evaluator]:
  """The config's evaluators by name, in config order."""
  evals = config.get("evals") or {}
  return {name: module(opts["type"]).build(opts, context) for name, opts in evals.items()}


def check_config(config, spec) -> str | None:
  """The first problem with ``config.evals``, or None."""
  for name, opts in (config.get("evals") or {}).items():
    if "type" not in opts:
      return f"config.evals.{name} needs a 'type' (one of {', '.join(names())})."
    try:
      mod = module(opts["type"])
    except ValueError as e:
      return str(e)
    problem = getattr(mod, "check_config", lambda *_: None)(opts, config, spec)
    if problem:
      return problem
  return None
