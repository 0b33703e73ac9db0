"""The self-consuming loop as pure functions: one generation step, scanned over generations,
vmapped over seed replicates, jitted with explicit shardings.

Generation g (0-based) of one replicate:
    counts = policy(pool, g)                     which rows generation g trains on
    state  = fit(init or previous state, view)   train_from = scratch | previous
    metrics = evaluate(state, real test data) | view stats
    pool   = pool with block g+1 written: fresh real rows (fresh_real) and
             n_synth samples of model g
Every key is derived from the replicate's root key by stream name and generation.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from collapse_jax import rng
from collapse_jax.data.source import Source, Task
from collapse_jax.loop.policies import Policy
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.models.base import GenerativeModel
from collapse_jax.parallel import mesh as mesh_lib


class Carry(NamedTuple):
  """The state of one replicate between generations (all arrays; checkpointed)."""
  state: Any
  pool: DataPool
  task: Task
  root: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loop:
  model: GenerativeModel
  source: Source
  policy: Policy
  layout: PoolLayout
  train_from: str  # "scratch" or "previous"

  def init(self, consts, root: jax.Array) -> Carry:
    """Generation-0 carry of one replicate: its task, the real set in the pool, a fresh model."""
    task = self.source.task(consts, rng.stream_key(root, "task"))
    real = self.source.real(consts, task, rng.stream_key(root, "real", 0), 0,
                            self.layout.n_real)
    state = self.model.init(rng.stream_key(root, "init", 0), task)
    return Carry(state, DataPool.create(real, self.layout), task, root)

  def step(self, consts, carry: Carry, g: jax.Array):
    """Generation ``g``: returns the next carry and ``(metrics, fitted state)``."""
    state, pool, task, root = carry
    counts = self.policy.counts(pool, g, rng.stream_key(root, "policy", g))
    view = TrainView(pool=pool, counts=counts, generation=g,
                     whole_blocks=self.policy.whole_blocks)
    if self.train_from == "scratch":
      state = self.model.init(rng.stream_key(root, "init", g), task)
    state = self.model.fit(state, view, task, rng.stream_key(root, "fit", g))
    metrics = self.model.evaluate(state, task, rng.stream_key(root, "eval", g)) | view.stats()
    fresh = synth = None
    if self.layout.n_fresh:
      fresh = self.source.real(consts, task, rng.stream_key(root, "real", g + 1), g + 1,
                               self.layout.n_fresh)
    if self.layout.n_synth:
      synth = self.model.sample(state, task, rng.stream_key(root, "sample", g),
                                 self.layout.n_synth)
    pool = pool.write_block(g + 1, fresh, synth)
    return Carry(state, pool, task, root), (metrics, state)

  def run(self, consts, carry: Carry, generations: jax.Array):
    """Scans ``step`` over ``generations [L]``; returns the carry and per-generation outputs."""
    return jax.lax.scan(lambda c, g: self.step(consts, c, g), carry, generations)


def carry_shardings(abstract: Carry, mesh: Mesh) -> Carry:
  """Pool rows on the ``data`` axis, everything else replicated."""
  rep = mesh_lib.replicated(mesh)
  return Carry(state=jax.tree.map(lambda _: rep, abstract.state),
               pool=jax.tree.map(lambda _: mesh_lib.rows(mesh), abstract.pool),
               task=jax.tree.map(lambda _: rep, abstract.task),
               root=rep)


class CompiledLoop:
  """The loop vmapped over replicates and jitted once for a mesh.

  ``init(consts, roots [S, 2])`` and ``run(consts, carry, generations [L])`` take and return
  carries whose leaves have a leading seed axis ``[S, ...]``; ``run`` also returns the
  per-generation metrics and fitted states, ``[S, L, ...]``.
  """

  def __init__(self, loop: Loop, mesh: Mesh, consts, roots: jax.Array):
    self.loop, self.mesh = loop, mesh
    init = jax.vmap(loop.init, in_axes=(None, 0))
    self.abstract_carry = jax.eval_shape(init, consts, roots)
    shard = carry_shardings(self.abstract_carry, mesh)
    rep = mesh_lib.replicated(mesh)
    self._init = jax.jit(init, out_shardings=shard)
    self._run = jax.jit(jax.vmap(loop.run, in_axes=(None, 0, None)),
                        in_shardings=(rep, shard, rep), out_shardings=(shard, rep),
                        donate_argnums=(1,))
    self.carry_shardings = shard

  def init(self, consts, roots: jax.Array) -> Carry:
    return self._init(consts, roots)

  def run(self, consts, carry: Carry, generations) -> tuple[Carry, Any]:
    return self._run(consts, carry, jnp.asarray(generations, jnp.int32))
