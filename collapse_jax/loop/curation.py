"""Curation: a stage between sampling and the pool that keeps the better synthetic rows.

With ``config.curation.rule`` other than ``none``, generation g draws ``factor`` times the
``n`` rows the policy writes, scores them, and writes the ``n`` the rule keeps:

  top        the best n of factor * n (ties broken by draw order)
  luce       K-choice with K = factor (Ferbach et al.): the candidates form n groups of K
             consecutive draws; one of each group is kept, candidate i with probability
             exp(s_i / T) / sum_j exp(s_j / T) (the Bradley-Terry/Luce model; T =
             ``temperature``). T -> 0 keeps each group's best; T -> inf keeps a uniform one.
  threshold  the rows scoring above ``threshold``, the first n in draw order (a verifier's
             accept/reject, Feng et al.); when fewer than n pass, the best-scoring of the
             rest top the set up, and ``curation_passed`` (the share of candidates that
             passed) says how many did. A threshold that no row can pass (above a score's
             known maximum) is refused before the run.

The score is a module in ``collapse_jax/scores/`` (or a plug-in's dotted path, see
scores/__init__.py). A policy and a curation rule combine freely: the policy
says how many synthetic rows a generation writes and which rows it trains on, curation
which samples those are. ``rule=none`` adds no stage: no extra draws, no extra keys.

Per generation g the metrics gain, of model g's candidates: ``curation_score_drawn`` (their
mean score), ``curation_score_kept`` (the kept rows' mean), and for ``threshold``,
``curation_passed``. Chunked sampling (`SegmentedLoop`) curates each chunk on its own and
averages its metrics over the chunks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from collapse_jax import registry, validate

RULES = ("none", "top", "luce", "threshold")

RANGES = {
    "factor": validate.Range(1, integer=True, note="candidates drawn per kept row"),
    "temperature": validate.POSITIVE,
    "threshold": validate.Range(),
    "accuracy": validate.Range(0, 1),
    "steps": validate.COUNT,
    "label": validate.Range(-1, integer=True, note="-1: any class"),
}


class Score(Protocol):
  """A curation score: higher is better."""

  def __call__(self, state: Any, task: Any, rows: Any, key: jax.Array, pool: Any
               ) -> jax.Array:
    """``[n]`` float32 scores of ``rows`` (a batch of n rows) of model ``state``; ``pool``:
    the replicate's `DataPool` (its first ``layout.n_real`` rows are the real set)."""


def score_module(name: str):
  return registry.lookup("scores", name, "curation score")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Curation:
  rule: str
  factor: int
  temperature: float
  threshold: float
  score: Score

  def draw(self, sample: Callable[[jax.Array, int], Any], state, task, pool, key: jax.Array,
           select_key: jax.Array, n: int) -> tuple[Any, dict[str, jax.Array]]:
    """``n`` curated rows out of ``factor * n`` drawn by ``sample(key, m)``, and the
    curation metrics."""
    candidates = sample(key, self.factor * n)
    k_score, k_select = jax.random.split(select_key)
    scores = jnp.asarray(self.score(state, task, candidates, k_score, pool), jnp.float32)
    # A NaN score (a diverged likelihood) ranks below every number.
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    keep, stats = select(self.rule, scores, n, k_select, self.temperature, self.threshold)
    stats["curation_score_drawn"] = _finite_mean(scores)
    stats["curation_score_kept"] = _finite_mean(scores[keep])
    return jax.tree.map(lambda x: x[keep], candidates), stats


def _finite_mean(x: jax.Array) -> jax.Array:
  finite = jnp.isfinite(x)
  return jnp.sum(jnp.where(finite, x, 0.0)) / jnp.maximum(jnp.sum(finite), 1)


def select(rule: str, scores: jax.Array, n: int, key: jax.Array, temperature: float,
           threshold: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Indices ``[n]`` (in draw order) of the rows ``rule`` keeps out of ``scores [K * n]``,
  and the rule's own metrics."""
  m = scores.shape[0]
  if rule == "top":
    _, keep = jax.lax.top_k(scores, n)  # equal scores: the earlier draw first
    return jnp.sort(keep), {}
  if rule == "luce":
    groups = scores.reshape(n, m // n) / temperature
    choice = jax.random.categorical(key, groups, axis=-1)
    return jnp.arange(n) * (m // n) + choice, {}
  if rule == "threshold":
    passed = scores > threshold
    index = jnp.arange(m)
    # Passing rows first, in draw order; then the rest, best score first.
    order = jnp.lexsort((jnp.where(passed, index, -scores), ~passed))
    return jnp.sort(order[:n]), {"curation_passed": jnp.mean(passed.astype(jnp.float32))}
  raise ValueError(f"Unknown curation rule {rule!r}.")


def warn_if_topped_up(config, generation: int, metrics: dict) -> None:
  """One warning line when fewer candidates passed ``threshold`` than the pool needed (the
  best of the rest then topped the set up)."""
  passed = metrics.get("curation_passed")
  if passed is not None and np.min(passed) * config.curation.factor < 1:
    logging.warning("Generation %d: only %.1f%% of the candidates passed curation.threshold="
                    "%g (%.1f%% needed); the best-scoring of the rest topped the set up.",
                    generation, 100 * np.min(passed), config.curation.threshold,
                    100 / config.curation.factor)


def build(config, loop) -> Curation | None:
  """``config.curation`` for ``loop`` (its model and source), or None for ``rule=none``."""
  c = config.curation
  if c.rule == "none":
    return None
  # The temperature and threshold stay as given: a sweep may set them to traced scalars.
  return Curation(rule=c.rule, factor=int(c.factor), temperature=c.temperature,
                  threshold=c.threshold, score=score_module(c.score).build(config, loop))


def check_config(config, make_loop: Callable[[], Any]) -> str | None:
  """The first problem with ``config.curation``, or None; ``make_loop()`` builds the run's
  `Loop` (its model and source), only for a rule other than none."""
  c = config.curation
  if c.rule not in RULES:
    return f"curation.rule must be one of {', '.join(RULES)}, got {c.rule!r}."
  problem = validate.fields_problem(c, RANGES, "curation.")
  if problem or c.rule == "none":
    return problem
  if c.rule == "luce" and c.factor < 2:
    return "curation.rule=luce chooses one of factor candidates: factor must be >= 2."
  loop = make_loop()
  try:
    module = score_module(c.score)
  except ValueError as e:
    return str(e)
  problem = getattr(module, "check", lambda *_: None)(config, loop)
  if problem:
    return problem
  bound = getattr(module, "upper_bound", lambda *_: None)(config, loop)
  if c.rule == "threshold" and bound is not None and not c.threshold < bound:
    return (f"No row can pass curation.threshold={c.threshold}: the {c.score} score is at "
            f"most {bound:.6g}.")
  if not loop.layout.n_synth:
    return f"curation.rule={c.rule} curates synthetic rows, but this policy writes none."
  return None

