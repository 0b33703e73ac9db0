"""The evaluator contract: host-side metrics of each generation, declared in the config.

``config.evals`` maps a name to ``{"type": <module in collapse_jax/evals/>, ...options}``.
After each compiled chunk the driver calls every evaluator once per generation, on the host,
with that generation's fitted states of all seeds; what it returns joins the generation's
metrics (and metrics.jsonl). An evaluator may write artifacts (sample grids, story files)
under ``context.workdir``. The driver names no data source and no field: an evaluator reads
what it needs from the context (the loop's model and source, the source's `RowSpec`).

A type is a module exposing ``OPTIONS`` (every option it reads, "type" included: a config
states each one, none has a hidden default), ``build(options, context) -> Evaluator`` and,
optionally,
``check_config(options, config, spec) -> str | None`` for the one validation pass and
``inapplicable(options, config, spec) -> str | None``: why it cannot apply to the source's
rows (a sentence), e.g. 2-D point metrics on rows that an override made 1-D. Such an
evaluator is dropped with a one-line warning, not refused: the config declared it for the
rows it usually runs on, and the override decides.

An evaluator that compares samples with what the model was trained on (memorization, n-gram
overlap) declares ``training_rows(options) -> int``: it is then called with
``training={"rows": batch, "valid": [seeds, m]}``, a uniform subset of at most that many of
the generation's training rows (every row of a smaller set; ``valid`` marks the filled
slots), drawn inside the compiled loop (`Loop.train_rows`) before the pool moves on.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

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


def module(type_name: str):
  return registry.lookup("evals", type_name, "evaluator type")


def build_all(config, context: Context) -> dict[str, Evaluator]:
  """The config's evaluators by name, in config order, less the `dropped` ones."""
  evals = config.get("evals") or {}
  skip = dropped(config, context.loop.source.row_spec)
  return {name: module(opts["type"]).build(opts, context) for name, opts in evals.items()
          if name not in skip}


def training_rows(config, spec) -> dict[str, int]:
  """The evaluators (not `dropped`) that see training rows: name -> how many they want."""
  skip = dropped(config, spec)
  wants = {name: getattr(module(opts["type"]), "training_rows", lambda o: 0)(opts)
           for name, opts in (config.get("evals") or {}).items() if name not in skip}
  return {name: n for name, n in wants.items() if n}


def dropped(config, spec) -> dict[str, str]:
  """The evaluators of a validated config that cannot apply to ``spec``'s rows: name ->
  why (the module's ``inapplicable``)."""
  whys = {name: getattr(module(opts["type"]), "inapplicable", lambda *_: None)(opts, config, spec)
          for name, opts in (config.get("evals") or {}).items()}
  return {name: why for name, why in whys.items() if why}


def check_config(config, spec) -> str | None:
  """The first problem with ``config.evals``, or None; warns once (a line) of each
  evaluator that is `dropped`."""
  evals = config.get("evals") or {}
  for name, opts in evals.items():
    if "type" not in opts:
      return f"config.evals.{name} needs a 'type' (one of {', '.join(registry.names('evals'))})."
    try:
      options = module(opts["type"]).OPTIONS
    except ValueError as e:
      return str(e)
    unknown, missing = sorted(set(opts) - set(options)), sorted(set(options) - set(opts))
    if unknown or missing:
      return (f"config.evals.{name} ({opts['type']}) "
              + (f"has no option {', '.join(unknown)}" if unknown else
                 f"lacks option {', '.join(missing)}")
              + f"; it takes exactly {', '.join(options)}.")
  skip = dropped(config, spec)
  for name, why in skip.items():
    logging.warning("Dropping evaluator config.evals.%s: %s", name, why)
  for name, opts in evals.items():
    if name not in skip:
      problem = getattr(module(opts["type"]), "check_config", lambda *_: None)(opts, config, spec)
      if problem:
        return problem
  return None
