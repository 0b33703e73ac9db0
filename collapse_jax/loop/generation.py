"""The self-consuming loop as pure functions: one generation step, scanned over generations,
vmapped over seed replicates, jitted with explicit shardings.

Generation g (0-based) of one replicate:
    counts = policy(pool, g)                     which rows generation g trains on
    state  = fit(init or previous state, view)   train_from = scratch | previous
    metrics = evaluate(state, real test data) | view stats
    pool   = pool with block g+1 written: fresh real rows (fresh_real) and
             n_synth samples of model g (curated, if config.curation says so)
Every key is derived from the replicate's root key by stream name and generation.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.lax import lax as lax_internal  # weak types: no public spelling
from jax.sharding import Mesh, NamedSharding

from collapse_jax import rng
from collapse_jax.data.source import Source, Task
from collapse_jax.loop.curation import Curation
from collapse_jax.loop.policies import Policy
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.models import training
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
  curation: Curation | None = None  # None: the samples are written as drawn
  # Each generation also outputs a uniform subset of this many of its training rows, for
  # evaluators that compare samples with them (`evals.base`); 0: none.
  train_rows: int = 0
  mesh: Mesh | None = None  # set by CompiledLoop: training batches are split over it

  def init(self, consts, root: jax.Array) -> Carry:
    """Generation-0 carry of one replicate: its task, the real set in the pool, a fresh model."""
    task = self.source.task(consts, rng.stream_key(root, "task"))
    real = self.source.real(consts, task, rng.stream_key(root, "real", 0), 0,
                            self.layout.n_real)
    state = self.model.init(rng.stream_key(root, "init", 0), task)
    pool = DataPool.create(real, self.layout, self.source.row_spec.pixels)
    return Carry(state, pool, task, root)

  def view(self, carry: Carry, g: jax.Array) -> TrainView:
    """The rows generation ``g`` trains on."""
    counts = self.policy.counts(carry.pool, g, rng.stream_key(carry.root, "policy", g))
    return TrainView(pool=carry.pool, counts=counts, generation=g,
                     whole_blocks=self.policy.whole_blocks,
                     batch_sharding=self.mesh and mesh_lib.examples(self.mesh))

  def start_state(self, carry: Carry, g: jax.Array):
    """The state generation ``g``'s training starts from."""
    if self.train_from == "scratch":
      return self.model.init(rng.stream_key(carry.root, "init", g), carry.task)
    return carry.state

  def synthetic(self, carry: Carry, state, g: jax.Array, n: int, *chunk: jax.Array):
    """``(rows, curation metrics)``: ``n`` samples of model ``g`` for the pool, curated if
    the loop curates. For sets sampled in chunks (`SegmentedLoop`), ``chunk`` is the chunk's
    index, which every key folds in."""
    fold = lambda key: jax.random.fold_in(key, chunk[0]) if chunk else key
    key = fold(rng.stream_key(carry.root, "sample", g))
    if self.curation is None:
      return self.model.sample(state, carry.task, key, n), {}
    sample = lambda k, m: self.model.sample(state, carry.task, k, m)
    return self.curation.draw(sample, state, carry.task, carry.pool, key,
                              fold(rng.stream_key(carry.root, "curate", g)), n)

  def finish(self, consts, carry: Carry, view: TrainView, state, g: jax.Array, synth=None):
    """After generation ``g``'s fit: its metrics, and the pool with its samples (``synth``:
    ``(rows, curation metrics)`` when sampled in chunks, else drawn here) written."""
    pool, task, root = carry.pool, carry.task, carry.root
    metrics = self.model.evaluate(state, task, rng.stream_key(root, "eval", g)) | view.stats()
    fresh = None
    if self.layout.n_fresh:
      fresh = self.source.real(consts, task, rng.stream_key(root, "real", g + 1), g + 1,
                               self.layout.n_fresh)
    if self.layout.n_synth and synth is None:
      synth = self.synthetic(carry, state, g, self.layout.n_synth)
    if synth is not None:
      synth, curation_metrics = synth
      metrics |= curation_metrics
    training = {}
    if self.train_rows:
      rows, valid = view.subset(rng.stream_key(root, "train_rows", g), self.train_rows)
      training = {"rows": view.gather(rows), "valid": valid}
    pool = pool.write_block(g + 1, fresh, synth)
    return Carry(state, pool, task, root), (metrics, state, training)

  def step(self, consts, carry: Carry, g: jax.Array):
    """Generation ``g``: returns the next carry and ``(metrics, fitted state, training
    rows)``; the training rows (``{"rows": batch [m], "valid": [m]}``) are empty unless
    ``train_rows``."""
    view = self.view(carry, g)
    state = self.model.fit(self.start_state(carry, g), view, carry.task,
                           rng.stream_key(carry.root, "fit", g))
    return self.finish(consts, carry, view, state, g)

  def run(self, consts, carry: Carry, generations: jax.Array):
    """Scans ``step`` over ``generations [L]``; returns the carry and per-generation outputs."""
    return jax.lax.scan(lambda c, g: self.step(consts, c, g), carry, generations)


def carry_shardings(abstract: Carry, mesh: Mesh) -> Carry:
  """Pool rows over every device, model states fully sharded over ``fsdp`` (replicated on a
  1-wide fsdp axis), tasks and keys replicated (see parallel/mesh.py)."""
  rep = mesh_lib.replicated(mesh)
  return Carry(state=mesh_lib.state_shardings(abstract.state, mesh),
               pool=jax.tree.map(lambda _: mesh_lib.rows(mesh), abstract.pool),
               task=jax.tree.map(lambda _: rep, abstract.task),
               root=rep)


class CompiledLoop:
  """The loop vmapped over replicates and jitted once for a mesh.

  ``init(consts, roots [S, 2])`` and ``run(consts, carry, generations [L])`` take and return
  carries whose leaves have a leading seed axis ``[S, ...]``; ``run`` also returns the
  per-generation metrics, fitted states and training rows (`Loop.step`), ``[S, L, ...]``.

  ``inputs``: scalars that differ between replicates (a sweep's points run side by side):
  ``(values, build)``, where ``values`` maps config fields to ``[S]`` arrays and
  ``build(scalars)`` is the `Loop` with those fields set to one replicate's (traced) values.
  A family that needs a field as a Python number (a shape, a branch) fails to trace;
  `trace_run` says so before anything runs.
  """

  def __init__(self, loop: Loop, mesh: Mesh, consts, roots: jax.Array,
               inputs: tuple[dict, Callable[[dict], Loop]] | None = None):
    loop = dataclasses.replace(loop, mesh=mesh)
    self.loop, self.mesh = loop, mesh
    self.inputs, build = inputs or ({}, None)
    # Each replicate's loop: the run's own, or the one built from its scalars. Scalars are
    # weakly typed, as the Python numbers of a config are, so dtypes promote alike.
    at = lambda v: (dataclasses.replace(build(jax.tree.map(_weak, v)), mesh=mesh) if v
                    else loop)
    init = jax.vmap(lambda c, r, v: at(v).init(c, r), in_axes=(None, 0, 0))
    self.abstract_carry = jax.eval_shape(init, consts, roots, self.inputs)
    shard = self.carry_shardings = carry_shardings(self.abstract_carry, mesh)
    rep = mesh_lib.replicated(mesh)
    # Consts placed on the mesh (`mesh_lib.place_consts`) keep their shardings; host arrays
    # are replicated.
    self.consts_shardings = jax.tree.map(
        lambda x: x.sharding if isinstance(getattr(x, "sharding", None), NamedSharding) else rep,
        consts)
    self._init = jax.jit(init, out_shardings=shard)
    # Loop checkpoints hold the pool as the row ranges written since the previous one
    # (`pool_rows`), rebuilt on restore by `write_pool_rows` from `empty_pool`. The ranges'
    # starts are arguments: one program per range size, not one per generation.
    self._pool_rows = jax.jit(_pool_rows, static_argnums=(2,), out_shardings=mesh_lib.rows(mesh))
    self._write_pool_rows = jax.jit(_write_pool_rows, donate_argnums=(0,),
                                    out_shardings=shard.pool)
    self._empty_pool = jax.jit(functools.partial(_empty_pool, self.abstract_carry.pool),
                               out_shardings=shard.pool)
    run = jax.vmap(lambda c, carry, g, v: at(v).run(c, carry, g), in_axes=(None, 0, None, 0))
    self._run = jax.jit(run, in_shardings=(self.consts_shardings, shard, rep, rep),
                        out_shardings=(shard, rep), donate_argnums=(1,))
    self._segmented = {}

  def init(self, consts, roots: jax.Array) -> Carry:
    return self._init(consts, roots, self.inputs)

  def segmented(self, segment_steps: int, chunk_rows: int) -> SegmentedLoop:
    """`SegmentedLoop(self, segment_steps, chunk_rows)`, made once per loop and sizes."""
    key = segment_steps, chunk_rows
    if key not in self._segmented:
      self._segmented[key] = SegmentedLoop(self, segment_steps, chunk_rows)
    return self._segmented[key]

  def run(self, consts, carry: Carry, generations) -> tuple[Carry, Any]:
    return self._run(consts, carry, jnp.asarray(generations, jnp.int32), self.inputs)

  def trace_run(self, consts, length: int) -> None:
    """Traces `run` over ``length`` generations (nothing runs, compiles or is allocated):
    raises where a replicate's `inputs` cannot be traced; the call that follows reuses the
    trace."""
    jax.eval_shape(self._run, consts, self.abstract_carry,
                   jax.ShapeDtypeStruct((length,), jnp.int32), self.inputs)

  def pool_rows(self, pool: DataPool, start: int, stop: int) -> dict:
    """Rows ``[start, stop)`` of ``pool`` (leaves ``[S, stop - start, ...]``, split over the
    devices) as a dict of its arrays: data, generation, real."""
    return self._pool_rows(pool, jnp.int32(start), stop - start)

  def abstract_pool_rows(self, start: int, stop: int) -> dict:
    return jax.eval_shape(lambda pool: _pool_rows(pool, start, stop - start),
                          self.abstract_carry.pool)

  def empty_pool(self) -> DataPool:
    """A pool of this loop's layout with no rows written."""
    return self._empty_pool()

  def write_pool_rows(self, pool: DataPool, rows: dict, start: int) -> DataPool:
    """``pool`` (donated) with ``rows`` (a `pool_rows` result) written from row ``start``."""
    return self._write_pool_rows(pool, rows, jnp.int32(start))


# The last few `compiled_loop`s of this process, by key.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_KEPT = 4


def compiled_loop(loop: Loop, mesh: Mesh, consts, roots: jax.Array) -> CompiledLoop:
  """`CompiledLoop(loop, mesh, consts, roots)`, the same object for an equal ``loop`` on the
  same ``mesh`` with ``consts`` and ``roots`` of the same types and shardings: a process's
  second run of a config (a resume, a rerun, a continuation) reuses the programs the first
  traced and compiled instead of tracing them again. Sound because a loop is a value (frozen
  dataclasses of the config's settings, compared field by field) and the data it reads come
  in as arguments; a loop with an unhashable field is compiled afresh."""
  spec = lambda x: (jax.typeof(x), getattr(x, "sharding", None))
  key = (loop, mesh, jax.tree.structure(consts), tuple(map(spec, jax.tree.leaves(consts))),
         spec(roots))
  try:
    compiled = _COMPILED.pop(key, None)
  except TypeError:  # unhashable
    return CompiledLoop(loop, mesh, consts, roots)
  _COMPILED[key] = compiled = compiled or CompiledLoop(loop, mesh, consts, roots)
  while len(_COMPILED) > _COMPILED_KEPT:
    _COMPILED.popitem(last=False)
  return compiled


def _weak(x: jax.Array) -> jax.Array:
  """``x`` weakly typed, as a Python scalar in its place would be."""
  return lax_internal._convert_element_type(x, weak_type=True)


def _empty_pool(abstract: DataPool) -> DataPool:
  """A pool shaped like ``abstract`` with no rows written: data 0, generation -1, not real."""
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)
  return zeros.replace(generation=zeros.generation - 1)


def _pool_rows(pool: DataPool, start: jax.Array, size: int) -> dict:
  return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, 1),
                      {"data": pool.data, "generation": pool.generation, "real": pool.real})


def _write_pool_rows(pool: DataPool, rows: dict, start: jax.Array) -> DataPool:
  put = lambda x, r: jax.lax.dynamic_update_slice_in_dim(x, r, start, 1)
  return pool.replace(data=jax.tree.map(put, pool.data, rows["data"]),
                      generation=put(pool.generation, rows["generation"]),
                      real=put(pool.real, rows["real"]))


class SegmentedLoop:
  """A generation of a family trained by the shared loop (`training.Trained`) as separate
  compiled calls, so the driver can checkpoint and report between them:

      state = start(consts, carry, g)                     fresh or previous state
      state, losses = segment(carry, state, g, first_step, stop)   repeated
      samples = sample_chunk(carry, state, g, i)          i < num_chunks, if chunked
                                                          (with curation metrics if curated)
      carry, (metrics, state, training) = finish(consts, carry, state, g, chunks)

  Leaves carry a leading seed axis, as in `CompiledLoop`; ``first_step`` ``[S]`` is the
  state's step when the generation began, ``stop`` the generation-local step to run to.
  The steps, keys and schedule are `Loop.step`'s, so the result equals it bitwise. A
  synthetic set of more than ``chunk_rows`` rows is sampled in chunks of that many (keys
  fold in the chunk index: the result depends on ``chunk_rows``, never on where a run
  stopped); a smaller one is drawn inside ``finish``, as `Loop.step` draws it.
  """

  def __init__(self, compiled: CompiledLoop, segment_steps: int, chunk_rows: int):
    loop, mesh = compiled.loop, compiled.mesh
    self.loop, self.segment_steps = loop, segment_steps
    n_synth = loop.layout.n_synth
    self.chunk_rows = chunk_rows if n_synth > chunk_rows else 0
    self.num_chunks = -(-n_synth // chunk_rows) if self.chunk_rows else 0
    self.initial_budget = getattr(loop.model, "initial_budget", None)
    shard, rep = compiled.carry_shardings, mesh_lib.replicated(mesh)
    state_shard, consts_shard = shard.state, compiled.consts_shardings

    def start(consts, carry, g):
      state, view = loop.start_state(carry, g), loop.view(carry, g)
      return state, jax.lax.cond(g == 0, lambda: self._budget(True).num_steps(view),
                                 lambda: self._budget(False).num_steps(view))

    def segment(initial, carry, state, g, first_step, stop):
      return training.train_segment(
          state, loop.view(carry, g), rng.stream_key(carry.root, "fit", g), loop.model.loss,
          self._budget(initial), first_step, stop, segment_steps)

    def sample_chunk(carry, state, g, chunk):
      rows, metrics = loop.synthetic(carry, state, g, self.chunk_rows, chunk)
      # Uncurated chunks stay bare rows: the checkpoints of runs without curation keep
      # their structure.
      return (rows, metrics) if loop.curation else rows

    def finish(consts, carry, state, g, chunks):
      synth = None
      if chunks is not None:
        rows, metrics = chunks if loop.curation else (chunks, [{}])
        synth = (jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n_synth], *rows),
                 jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *metrics))
      return loop.finish(consts, carry, loop.view(carry, g), state, g, synth)

    seeds = lambda f, axes: jax.vmap(f, in_axes=axes)
    self._start = jax.jit(seeds(start, (None, 0, None)), in_shardings=(consts_shard, shard, rep),
                          out_shardings=(state_shard, rep))
    self._segment = {
        initial: jax.jit(seeds(functools.partial(segment, initial), (0, 0, None, 0, None)),
                         in_shardings=(shard, state_shard, rep, rep, rep),
                         out_shardings=(state_shard, rep), donate_argnums=(1,))
        for initial in (False, True)}
    rows = mesh_lib.rows(mesh)
    # A curated chunk is (rows, its curation metrics [S]).
    chunk = self.chunk_sharding = (rows, rep) if loop.curation else rows
    self._sample_chunk = jax.jit(seeds(sample_chunk, (0, 0, None, None)),
                                 in_shardings=(shard, state_shard, rep, rep), out_shardings=chunk)
    self._finish = jax.jit(seeds(finish, (None, 0, 0, None, 0)),
                           in_shardings=(consts_shard, shard, state_shard, rep, chunk),
                           out_shardings=(shard, rep), donate_argnums=(1,))

  def _budget(self, initial: bool) -> training.Budget:
    return self.initial_budget if initial and self.initial_budget else self.loop.model.budget

  def start(self, consts, carry: Carry, g: int):
    """``(state, total steps)`` of generation ``g``; the total is the same for every seed."""
    state, total = self._start(consts, carry, jnp.int32(g))
    return state, int(np.max(jax.device_get(total)))

  def segment(self, carry: Carry, state, g: int, first_step, stop: int):
    initial = bool(g == 0 and self.initial_budget is not None)
    return self._segment[initial](carry, state, jnp.int32(g), first_step, jnp.int32(stop))

  def sample_chunk(self, carry: Carry, state, g: int, chunk: int):
    """Chunk ``chunk`` of generation ``g``'s synthetic set, leaves ``[S, chunk_rows, ...]``."""
    return self._sample_chunk(carry, state, jnp.int32(g), jnp.int32(chunk))

  def finish(self, consts, carry: Carry, state, g: int, chunks: list | None = None):
    """Metrics and the written pool; ``chunks``: the `sample_chunk` outputs, if chunked."""
    if chunks is not None and self.loop.curation:
      chunks = tuple(map(list, zip(*chunks)))  # ([rows], [metrics]): `chunk_sharding`'s shape
    return self._finish(consts, carry, state, jnp.int32(g), chunks)


def is_trained(model) -> bool:
  """Whether ``model`` trains through the shared optax loop (`training.Trained`), so a
  generation can run in segments."""
  return isinstance(getattr(model, "budget", None), training.Budget) and hasattr(model, "loss")
