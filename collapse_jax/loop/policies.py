"""Data policies: which pool rows generation g trains on.

Each policy is a pure function ``(pool, g, key) -> counts [capacity] int32`` plus the pool
layout it needs. Generation 0 always trains on the initial real set; for g >= 1 (the
papers' protocols):

  replace               the newest synthetic block only (Gerstgrasser et al.)
  accumulate            real data plus every synthetic block so far
  accumulate_subsample  a fresh uniform subsample, without replacement, of n_synth rows
                        of the accumulated pool
  mix                   the fixed real set plus round(lambda * n_real) synthetic rows of
                        the latest generation (Bertrand et al.); lambda = inf, or the
                        name ``fully_synthetic``, trains on the latest samples only
  fresh_real            n_real fresh real rows (never reused) plus the newest synthetic
                        block (Alemohammad et al.'s fresh data loop)

Control arms, to draw beside them (their samples are drawn and scored, never trained on):
  real_only             the initial real set in every generation: the run-to-run noise floor
  more_real             accumulate with each generation's n_synth synthetic rows replaced by
                        as many fresh real rows: what accumulate would give were its new
                        data real (with an equal-compute budget, it separates accumulate's
                        data effect from its compute effect)

A policy outside the package is a module named by its dotted path
(``--config.policy.name=my_lab.recent``) exposing ``build(*, n_real, n_synth, mix_lambda)
-> Policy`` (tests/plugins/recent_policy.py is one). The loop's guarantees hold if its
``counts``:
  - is a pure function of the pool's tags (``pool.generation``, ``pool.real``), ``g`` and
    ``key``: never of row values, so every family and source can run it;
  - selects rows of generations <= g only, with generation 0 training on the real set;
  - does not depend on ``pool.layout.capacity`` (the pool is padded to a multiple of the
    device count and, for a longer run, grown): a row's slot is its identity, so the same
    rows must be chosen whatever the padding, else replace and accumulate, or a run and
    its continuation, fit different models from the same data;
  - sets ``whole_blocks=False`` unless it selects whole generation blocks.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from collapse_jax import registry
from collapse_jax.loop.pool import DataPool, PoolLayout

NAMES = ("replace", "accumulate", "accumulate_subsample", "mix", "fully_synthetic",
         "fresh_real", "real_only", "more_real")

CountsFn = Callable[[DataPool, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
  name: str
  n_real: int
  n_synth: int      # synthetic rows sampled per generation
  n_fresh: int      # fresh real rows added per generation
  keeps_all: bool   # needs every generation's block, not only the latest
  counts: CountsFn
  whole_blocks: bool = True  # counts select whole blocks (see TrainView)

  def layout(self, num_generations: int, multiple_of: int = 1) -> PoolLayout:
    return PoolLayout(n_real=self.n_real, n_fresh=self.n_fresh, n_synth=self.n_synth,
                      num_blocks=num_generations if self.keeps_all else 1,
                      multiple_of=multiple_of)


def _latest(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
  del key
  return (pool.generation == g).astype(jnp.int32)


def _all(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
  del key
  return ((pool.generation >= 0) & (pool.generation <= g)).astype(jnp.int32)


def _real_plus_latest_synthetic(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
  del key
  latest = (pool.generation == g) & ~pool.real
  return ((pool.generation == 0) | latest).astype(jnp.int32)


def _initial_real(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
  del g, key
  return (pool.generation == 0).astype(jnp.int32)


def _all_real(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
  del key
  return ((pool.generation >= 0) & (pool.generation <= g) & pool.real).astype(jnp.int32)


def uniform_subset(key: jax.Array, m: jax.Array, n: int, capacity: int) -> jax.Array:
  """``[capacity]`` int32 indicator of a uniform n-subset of rows ``[0, m)`` (all if m <= n).

  Cost O(n) draws plus two O(capacity) passes, no sort: the first k distinct values of an
  i.i.d. uniform sequence form a uniform k-subset. We draw 4n + 64 values and pick
  k = min(n, m - n) distinct ones, taking the complement when m < 2n so that k <= m / 2
  always; the draws then hold k distinct values unless an event many standard deviations
  out occurs. Draw j is a first occurrence iff it is the smallest position holding its
  value, found by one scatter-min (exact, order-free) instead of a sort.
  """
  draws = jax.random.randint(key, (4 * n + 64,), 0, jnp.maximum(m, 1))
  position = jnp.arange(draws.shape[0], dtype=jnp.int32)
  first_at = jnp.full((capacity,), draws.shape[0], jnp.int32).at[draws].min(position)
  first = first_at[draws] == position
  complement = m < 2 * n
  k = jnp.where(complement, m - n, n)
  chosen = first & (jnp.cumsum(first) <= k)
  # Chosen values are distinct, so marking them in place (-1) is one scatter with no clashes.
  picked = first_at.at[jnp.where(chosen, draws, capacity)].set(-1, mode="drop") == -1
  prefix = jnp.arange(capacity) < m
  return jnp.where(m <= n, prefix, jnp.where(complement, prefix & ~picked, picked)
                   ).astype(jnp.int32)


def _subsample(n: int) -> CountsFn:
  def counts(pool: DataPool, g: jax.Array, key: jax.Array) -> jax.Array:
    # With every block kept, the rows of generations <= g are exactly the prefix [0, m).
    m = jnp.sum((pool.generation >= 0) & (pool.generation <= g))
    return uniform_subset(key, m, n, pool.layout.capacity)
  return counts


def make_policy(name: str, *, n_real: int, n_synth: int, mix_lambda: float = 1.0) -> Policy:
  """The policy ``name`` (built in, or a plug-in's dotted module path) for a real set of
  ``n_real`` rows.

  ``n_synth`` is the number of synthetic rows per generation for replace, accumulate,
  accumulate_subsample and fresh_real; mix derives it from ``mix_lambda``.
  """
  if "." in name:
    module = registry.lookup("loop", name, "policy")
    return module.build(n_real=n_real, n_synth=n_synth, mix_lambda=mix_lambda)
  common = dict(name=name, n_real=n_real)
  if name == "replace":
    return Policy(**common, n_synth=n_synth, n_fresh=0, keeps_all=False, counts=_latest)
  if name == "accumulate":
    return Policy(**common, n_synth=n_synth, n_fresh=0, keeps_all=True, counts=_all)
  if name == "accumulate_subsample":
    return Policy(**common, n_synth=n_synth, n_fresh=0, keeps_all=True,
                  counts=_subsample(n_synth), whole_blocks=False)
  if name == "fully_synthetic" or (name == "mix" and math.isinf(mix_lambda)):
    return Policy(**common, n_synth=n_real, n_fresh=0, keeps_all=False, counts=_latest)
  if name == "mix":
    return Policy(**common, n_synth=round(mix_lambda * n_real), n_fresh=0, keeps_all=False,
                  counts=_real_plus_latest_synthetic)
  if name == "fresh_real":
    return Policy(**common, n_synth=n_synth, n_fresh=n_real, keeps_all=False, counts=_latest)
  if name == "real_only":
    return Policy(**common, n_synth=n_synth, n_fresh=0, keeps_all=False, counts=_initial_real)
  if name == "more_real":
    return Policy(**common, n_synth=n_synth, n_fresh=n_synth, keeps_all=True,
                  counts=_all_real, whole_blocks=False)
  raise ValueError(f"Unknown policy {name!r}; choose one of {', '.join(NAMES)}, or give a "
                   "plug-in's dotted module path.")
