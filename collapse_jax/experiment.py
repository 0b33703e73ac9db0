"""train_and_evaluate: a whole self-consuming run in a workdir, resumable at any chunk.

    <workdir>/config.json       the run's config (a different config is refused)
    <workdir>/metrics.jsonl     one row per generation per seed, theory columns beside
    <workdir>/checkpoints/      Orbax: each generation's model, loop state per chunk
    <workdir>/plots/*.png       metric vs generation, mean and spread over seeds
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import logging as pylogging
import pathlib
import sys
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from collapse_jax import checkpoint, progress, rng, validate
from collapse_jax import environment
from collapse_jax import workdir as workdir_lib
from collapse_jax.data import source as source_lib
from collapse_jax.loop.generation import Carry, CompiledLoop, Loop, SegmentedLoop, is_trained
from collapse_jax.loop.pool import PoolLayout
from collapse_jax.evals import base as evals_base
from collapse_jax.metrics import theory
from collapse_jax.models import base as model_base
from collapse_jax.parallel import distributed
from collapse_jax.parallel import mesh as mesh_lib
from collapse_jax.report import curves as curve_plots
from collapse_jax.report import plots

# Fields that may change between a run and its continuation.
CONTINUABLE = ("num_generations", "generations_per_chunk", "mesh")


def _libc():
  try:
    return ctypes.CDLL("libc.so.6")
  except OSError:  # not glibc (macOS, musl): nothing to trim
    return None


_LIBC = _libc()


def release_freed_host_memory() -> None:
  """Hands the C heap's free pages back to the OS (glibc's ``malloc_trim``).

  XLA:CPU allocates every array and temporary with malloc. Buffers under glibc's mmap
  threshold (which grows to 32 MiB after the first large frees) come from heaps that keep
  freed pages, so without this the resident size drifts up by tens of MiB a generation
  (benchmarks/scale.py --only memory, BUILD_NOTES). Called at chunk and generation
  boundaries; it takes milliseconds.
  """
  if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
    _LIBC.malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
# Free bytes glibc keeps at the top of its heap: room for one temporaries block (~54 MiB for
# the :cpu GeoDiff step). 2 GiB raised the MNIST memory benchmark's peak by ~350 MiB.
KEEP_FREE_BYTES = 64 * 2**20


def reuse_host_temporaries() -> None:
  """On the CPU backend, makes glibc serve large blocks from its heaps and keep their pages.

  XLA:CPU allocates one block for a program's temporaries on every call. Over glibc's mmap
  ceiling (32 MiB) that block is mmapped afresh each time and every 4 KiB page faults on
  first touch: a `:cpu` GeoDiff training step on rows of 45 atoms took 13,900 page faults
  and 70 ms of CPU, 43 ms without them (BUILD_NOTES, "Molecules"). With mmap off and the
  trim threshold at `KEEP_FREE_BYTES` the pages are reused; `release_freed_host_memory`
  still hands them back at chunk and generation boundaries. Changes no number, only where
  memory lives.
  """
  if _LIBC is not None and hasattr(_LIBC, "mallopt") and jax.default_backend() == "cpu":
    _LIBC.mallopt(M_MMAP_MAX, 0)
    _LIBC.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)


class NonFiniteError(RuntimeError):
  """A generation produced non-finite metrics; earlier generations are checkpointed."""


def configure_logging() -> None:
  """absl INFO logging for our progress (process 0 only: the others warn and err only),
  without Orbax's per-save INFO chatter."""
  logging.set_verbosity(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  quiet = lambda r: r.levelno >= pylogging.WARNING or "orbax" not in r.pathname
  # Orbax logs through absl's logger; a filter there acts before any handler (absl's own
  # handler forwards records without applying the filters set on it).
  pylogging.getLogger("absl").addFilter(quiet)


def _config_dict(config) -> dict:
  return json.loads(config.to_json())


def check_same_run(config, workdir: pathlib.Path) -> None:
  """Refuses a workdir that holds a run of a different config."""
  old = workdir_lib.read_config(workdir)
  if old is None:
    return
  new = _config_dict(config)
  differ = sorted(k for k in set(old) | set(new)
                  if k not in CONTINUABLE and old.get(k) != new.get(k))
  if differ:
    raise validate.ConfigError(
        f"{workdir} holds a run of a different config (fields {', '.join(differ)} differ); "
        "use another --workdir, or pass --overwrite to delete that run.")


def build_loop(config, layout: PoolLayout) -> Loop:
  source = source_lib.source_module(config.data.source).build(config.data)
  model = model_base.family(config.model.name).build(config, layout, source.row_spec)
  return Loop(model=model, source=source, policy=validate.policy_of(config), layout=layout,
              train_from=config.train_from)


def _metric_rows(config, history: list[dict]) -> list[dict]:
  """Flattens ``history`` (per generation: metric -> per-seed list) to JSONL rows."""
  gens = np.arange(len(history))
  curves = theory.curves(config, gens) if history else {}
  rows = []
  for g, metrics in enumerate(history):
    for s in range(config.num_seeds):
      row = {"generation": g, "seed": s}
      row |= {k: v[s] for k, v in metrics.items()}
      row |= {k: float(v[g]) for k, v in curves.items()}
      rows.append(row)
  return rows


def _write_metrics(config, workdir: pathlib.Path, history: list[dict]) -> None:
  if jax.process_index() != 0:
    return
  tmp = workdir / "metrics.jsonl.tmp"
  tmp.write_text("".join(json.dumps(r) + "\n" for r in _metric_rows(config, history)))
  tmp.replace(workdir / "metrics.jsonl")  # atomic: readers never see half a file


def _resume(config, ckpts, compiled: CompiledLoop, mesh, consts, roots, workdir,
            resume_from_intact: bool):
  """(generations done, carry, metrics history, training curves, pool slices) from the latest
  loop checkpoint, or None. A damaged latest checkpoint is refused in one sentence, or, with
  ``resume_from_intact``, set aside with everything after the newest intact one."""
  step = ckpts.latest_loop_step()
  if step is None:
    return None
  problem = ckpts.damage("loop", step)
  if problem:
    intact = [s for s in ckpts.intact_loop_steps() if s < step]
    if not resume_from_intact:
      way = (f"rerun with --resume_from_intact to continue from the newest intact one "
             f"(after generation {intact[-1] - 1}), or " if intact else "rerun ")
      ckpts.verify("loop", step, way + "with --overwrite to start over.")
    if not intact:
      raise checkpoint.CheckpointError(
          f"The checkpoint {workdir / 'checkpoints' / 'loop' / str(step)} is damaged "
          f"({problem}) and no older intact one is left; rerun with --overwrite.")
    aside = ckpts.set_aside(intact[-1])
    logging.warning("The newest checkpoint was damaged (%s); continuing after generation %d, "
                    "later checkpoints moved to %s.", problem, intact[-1] - 1, aside)
    step = intact[-1]
  meta = ckpts.restore_meta(step)
  curves = meta.get("curves", {})
  if "pool" not in meta:
    raise checkpoint.CheckpointError(
        f"The checkpoints in {workdir} were written by an older collapse_jax (the pool inside "
        "the loop checkpoint); rerun with --overwrite to start over.")
  if step >= config.num_generations:  # already done: nothing to continue
    return step, None, meta["history"][:config.num_generations], curves, meta["pool"]
  old_layout = PoolLayout(**meta["layout"])
  old = CompiledLoop(build_loop(config, old_layout), mesh, consts, roots)
  saved = ckpts.restore_carry(step, _without_pool(old.abstract_carry),
                              _without_pool(old.carry_shardings))
  pool = old.empty_pool()
  for block, start, stop in meta["pool"]:
    rows = ckpts.restore_pool_block(block, old.abstract_pool_rows(start, stop),
                                    mesh_lib.rows(mesh))
    pool = old.write_pool_rows(pool, rows, start)
  carry = Carry(pool=pool, **saved)
  new_layout = compiled.loop.layout
  if old_layout != new_layout:
    carry = carry._replace(pool=jax.vmap(lambda p: p.resized(new_layout))(carry.pool))
    new_state = compiled.abstract_carry.state
    same = jax.tree.map(lambda a, b: a.shape == b.shape, carry.state, new_state)
    if not all(jax.tree.leaves(same)):
      # Only nonparametric states (KDE) are sized by the pool; a scratch run re-initialises
      # them anyway before the next fit.
      carry = carry._replace(state=compiled.init(consts, roots).state)
  return step, carry, meta["history"], curves, meta["pool"]


def _save_loop(ckpts, compiled: CompiledLoop, done: int, carry, meta: dict, slices: list,
               blocks: list[int]) -> list:
  """Saves the loop checkpoint after ``done`` generations, with the pool rows of ``blocks``
  (written since the previous one) saved beside it; returns the pool slices
  ``[[block, start, stop], ...]`` that rebuild the pool, replayed in order (a slice every
  later one covers is dropped: a replacing policy keeps one)."""
  layout = compiled.loop.layout
  new = [[b, *layout.written_rows(b)] for b in blocks]
  new = [s for s in new if s[1] < s[2]]
  slices = slices + new
  keep = [s for i, s in enumerate(slices)
          if not _covered(s[1:], [t[1:] for t in slices[i + 1:]])]
  # A chunk of several generations may rewrite a ring slot: only its newest block is saved.
  rows = {b: compiled.pool_rows(carry.pool, start, stop) for b, start, stop in new
          if [b, start, stop] in keep}
  ckpts.save_loop(done, _without_pool(carry), meta | {"pool": keep}, rows)
  return keep


def _without_pool(carry: Carry) -> dict:
  """A carry's fields but its pool (what a loop checkpoint holds), as a dict."""
  return {k: v for k, v in carry._asdict().items() if k != "pool"}


def _covered(span, spans) -> bool:
  """Whether row range ``span`` lies inside the union of ``spans`` (all ``[start, stop)``)."""
  start, stop = span
  for a, b in sorted(spans):
    if a > start:
      break
    start = max(start, b)
  return start >= stop


def segment_steps(config, loop: Loop, compiled: CompiledLoop) -> int:
  """Steps per training segment of a generation; 0: the generation runs inside one compiled
  scan (analytic families, and short generations where a checkpoint would cost more than a
  restart).

  ``config.checkpoint_every_steps``: N > 0 segments of N steps, 0 never, -1 (default) by
  model size: 5e9 / parameters, within [200, 10000] steps (a 9M-parameter LM every ~550
  steps, a 35M UNet every 200), when a generation is longer than one segment or its
  synthetic set is sampled in chunks (more than ``config.sample_chunk_rows`` rows).
  """
  every = config.get("checkpoint_every_steps", -1)
  if every == 0 or not is_trained(loop.model):
    return 0
  if every > 0:
    return every
  state = compiled.abstract_carry.state
  params = sum(x.size for x in jax.tree.leaves(state["params"])) // config.num_seeds
  auto = int(np.clip(5e9 / max(params, 1), 200, 10_000))
  m = config.model
  longest = max(m.get("steps", 0), m.get("initial_steps", 0))
  if m.get("epochs", 0.0):  # an accumulating pool at its largest
    rows = config.n_real + config.num_generations * config.n_synth
    longest = max(longest, int(m.epochs * rows / m.batch_size))
  chunked = 0 < config.get("sample_chunk_rows", 0) < loop.layout.n_synth
  return auto if longest > auto or chunked else 0


def _segmented_generation(config, workdir, g: int, seg: SegmentedLoop, ckpts, consts, carry,
                          reporter: progress.Reporter, stop: progress.StopRequest,
                          abstract_state, state_shardings):
  """Generation ``g`` in training segments with a checkpoint after each; resumes from the
  newest one. Returns ``(carry, (metrics, states) with a generation axis of 1, curve)``."""
  local = ckpts.latest_train(g)
  if local is None:
    state, total = seg.start(consts, carry, g)
    first_step = distributed.to_host(state["step"])
    local, curve = 0, []
  else:
    ckpts.verify("train", g * checkpoint.TRAIN_ID + local,
                 "remove it (the generation then restarts from its previous segment "
                 "checkpoint or its beginning) or rerun with --overwrite.")
    state, meta = ckpts.restore_train(g, local, abstract_state, state_shardings)
    first_step = np.asarray(meta["first_step"], np.int32)
    total, curve = meta["total"], meta["curve"]
    logging.info("Resuming generation %d at step %d of %d.", g, local, total)
  reporter.start_generation(g, total, local)
  window = max(1, config.get("log_every_steps", 100))
  while local < total:
    end = min(local + seg.segment_steps, total)
    new_state, losses = seg.segment(carry, state, g, first_step, end)
    losses = np.asarray(distributed.to_host(losses))[:, :end - local]
    bad = ~np.isfinite(losses).all(0)
    if bad.any():
      raise NonFiniteError(
          f"Generation {g} reached a non-finite training loss at step "
          f"{local + int(np.argmax(bad)) + 1}; its last good checkpoint (step {local}) and "
          f"every earlier generation are intact in {workdir}.")
    ends, means = progress.window_means(losses, local, window)
    curve += [[e, m] for e, m in zip(ends, means)]
    state, local = new_state, end
    ckpts.save_train(g, local, state, {"first_step": first_step.tolist(), "total": total,
                                       "curve": curve})
    reporter.segment([int(first_step.max()) + e for e in ends], means, local)
    if stop.requested:
      raise progress.Preempted(
          f"Stopped on SIGTERM in generation {g} at step {local} of {total}, checkpointed "
          f"in {workdir}; rerun the same command to continue.")
  chunks = _sample_in_chunks(workdir, g, seg, ckpts, carry, state, stop)
  carry, (metrics, state) = seg.finish(consts, carry, state, g, chunks)
  return carry, jax.tree.map(lambda x: x[:, None], (metrics, state)), curve


def _sample_in_chunks(workdir, g: int, seg: SegmentedLoop, ckpts, carry, state,
                      stop: progress.StopRequest) -> list | None:
  """Generation ``g``'s synthetic set in chunks, each checkpointed (a rerun restores the
  saved ones), or None when the set is small enough to be drawn in one call."""
  if not seg.num_chunks:
    return None
  saved, chunks = ckpts.sample_chunks(g), []
  if saved:  # (a trace of the sampler, only to restore)
    abstract = jax.eval_shape(seg.sample_chunk, carry, state, g, 0)
  for i in range(seg.num_chunks):
    if i < saved:
      chunks.append(ckpts.restore_samples(g, i, abstract, seg.chunk_sharding))
      continue
    chunks.append(seg.sample_chunk(carry, state, g, i))
    ckpts.save_samples(g, i, chunks[-1])
    release_freed_host_memory()
    logging.info("Generation %d: sampled chunk %d of %d (%d rows each).", g, i + 1,
                 seg.num_chunks, seg.chunk_rows)
    if stop.requested and i + 1 < seg.num_chunks:
      raise progress.Preempted(
          f"Stopped on SIGTERM in generation {g} after sampling chunk {i + 1} of "
          f"{seg.num_chunks}, checkpointed in {workdir}; rerun the same command to continue.")
  return chunks


def train_and_evaluate(config, workdir: str | pathlib.Path, *, overwrite: bool = False,
                       resume_from_intact: bool = False) -> list[dict]:
  """Runs (or resumes) ``config`` in ``workdir``; returns the metrics rows.

  ``resume_from_intact``: if the newest checkpoint is damaged, continue from the newest
  intact one (the damaged ones are moved to checkpoints/damaged/); without it, a damaged
  checkpoint stops the run with one sentence.
  """
  started = time.time()
  rng.configure_jax()
  reuse_host_temporaries()
  validate.check(config)

  # Mesh, data and the compiled loop, before the workdir is touched.
  mesh = mesh_lib.from_config(config.mesh)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  loop = build_loop(config, layout)
  source = loop.source  # on the mesh: training rows split, each process loading its own
  load = lambda rows: source.consts() if rows is None else source.consts(rows=rows)
  try:
    consts = mesh_lib.place_consts(load, source.num_train, mesh)
  except ValueError as e:  # validation does not decode every file (e.g. an image folder's)
    raise validate.ConfigError(str(e)) from e
  workdir = workdir_lib.check_path(workdir)
  if overwrite:
    workdir_lib.check_clearable(workdir)  # before the lock file lands in a folder it refuses
  with workdir_lib.hold(workdir, jax.process_index()):
    if not overwrite:
      check_same_run(config, workdir)
    elif jax.process_index() == 0:  # only now: every check has passed and no one else runs
      workdir_lib.clear_run(workdir)
    distributed.barrier("prepare_workdir")
    return _run(config, workdir, loop, mesh, consts, resume_from_intact, started)


def _run(config, workdir: pathlib.Path, loop: Loop, mesh, consts, resume_from_intact: bool,
         started: float) -> list[dict]:
  """`train_and_evaluate` in a workdir this process holds, checked and ready."""
  roots = rng.seed_keys(config.seed, config.num_seeds)
  compiled = CompiledLoop(loop, mesh, consts, roots)
  seg_steps = segment_steps(config, loop, compiled)
  seg = None
  if seg_steps:
    seg = SegmentedLoop(compiled, seg_steps, config.get("sample_chunk_rows", 0))

  # Start or resume.
  ckpts = checkpoint.RunCheckpoints(workdir)
  resumed = _resume(config, ckpts, compiled, mesh, consts, roots, workdir, resume_from_intact)
  if resumed is None:
    done, carry, history, curves, slices = 0, compiled.init(consts, roots), [], {}, []
  else:
    done, carry, history, curves, slices = resumed
    logging.info("Resuming %s after generation %d.", workdir, done - 1)
  if jax.process_index() == 0:  # only now: a refused resume leaves the workdir as it was
    (workdir / "config.json").write_text(
        json.dumps(_config_dict(config), indent=2, sort_keys=True))
    notice = environment.record(workdir, done)
    if notice:
      logging.warning(notice)

  evaluators = evals_base.build_all(
      config, evals_base.Context(config=config, workdir=workdir, loop=loop, consts=consts))
  reporter = progress.Reporter(workdir, config.num_generations)

  # The generation loop: one compiled scan per chunk, or one generation in segments.
  total = config.num_generations
  chunk = 1 if seg else (config.generations_per_chunk or total)
  start = time.time()
  first = done
  stop = progress.StopRequest()
  try:
    with stop.installed():
      while done < total:
        gens = np.arange(done, min(done + chunk, total))
        if seg:
          carry, (metrics, states), curves[str(done)] = _segmented_generation(
              config, workdir, done, seg, ckpts, consts, carry, reporter, stop,
              compiled.abstract_carry.state, compiled.carry_shardings.state)
        else:
          carry, (metrics, states) = compiled.run(consts, carry, gens)
        # To host once: slicing device arrays per generation would compile a program per leaf.
        metrics, states = distributed.to_host((metrics, states))
        for i, g in enumerate(gens):
          values = {k: np.asarray(v[:, i], np.float64) for k, v in metrics.items()}
          state = jax.tree.map(lambda x: x[:, i], states)
          for evaluator in evaluators.values():
            values |= evaluator(state, carry.task, carry.root, int(g))
          bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
          if bad:
            _write_metrics(config, workdir, history)
            raise NonFiniteError(
                f"Generation {g} produced non-finite {', '.join(bad)}; generations up to "
                f"{g - 1} are checkpointed in {workdir}.")
          ckpts.save_model(int(g), state)
          history.append({k: v.tolist() for k, v in values.items()})
          reporter.end_generation(int(g), values)
        done = int(gens[-1]) + 1
        meta = {"history": history, "curves": curves,
                "layout": dataclasses.asdict(compiled.loop.layout)}
        # The real set (block 0) with the first save, then the blocks this chunk wrote.
        blocks = ([0] if not slices else []) + [int(g) + 1 for g in gens]
        slices = _save_loop(ckpts, compiled, done, carry, meta, slices, blocks)
        if seg:
          ckpts.drop_in_progress(done - 1)
        release_freed_host_memory()
        _write_metrics(config, workdir, history)
        if jax.process_index() == 0 and curves:
          curve_plots.plot_training_curves(curves, workdir / "plots" / "train_loss.png")
        elapsed = time.time() - start
        eta = elapsed / (done - first) * (total - done)
        summary = ", ".join(f"{k}={np.mean(v):.4g}" for k, v in history[-1].items())
        logging.info("generation %d/%d | %.1fs elapsed | ETA %.1fs | %s", done, total,
                     elapsed, eta, summary)
        if stop.requested and done < total:
          raise progress.Preempted(
              f"Stopped on SIGTERM after generation {done - 1}, checkpointed in {workdir}; "
              "rerun the same command to continue.")
  finally:
    reporter.close()
    ckpts.close()
  _write_metrics(config, workdir, history)  # also rewrites a damaged file of a finished run
  rows = _metric_rows(config, history)
  if jax.process_index() == 0:
    plots.plot_run(rows, workdir / "plots", title=f"{config.model.name}, {config.policy.name}")
    _add_wall_time(workdir, time.time() - started)
  return rows


def _add_wall_time(workdir: pathlib.Path, seconds: float) -> None:
  """Adds this invocation's wall time to ``timing.json`` (a resumed run sums its parts)."""
  path = workdir / "timing.json"
  before = json.loads(path.read_text()).get("wall_s", 0.0) if path.exists() else 0.0
  path.write_text(json.dumps({"wall_s": round(before + seconds, 1)}) + "\n")


class Generation(NamedTuple):
  """Generation g's fitted model in a workdir, ready to sample: ``state`` and ``tasks``
  have leaves ``[seeds, ...]``; ``roots`` are the replicates' root keys ``[seeds, 2]``."""
  config: Any
  loop: Loop
  state: Any
  tasks: Any
  roots: jax.Array


def load_generation(workdir: str | pathlib.Path, generation: int) -> Generation:
  """Restores generation ``generation``'s model of the run in ``workdir`` (all seeds)."""
  rng.configure_jax()
  reuse_host_temporaries()
  workdir = pathlib.Path(workdir)
  saved = workdir / "config.json"
  if not saved.exists():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json).")
  config = ml_collections.ConfigDict(json.loads(saved.read_text()))
  ckpts = checkpoint.RunCheckpoints(workdir)
  done = ckpts.model_generations()
  if generation not in done:
    ckpts.close()
    raise validate.ConfigError(
        f"{workdir} has no model of generation {generation}; it has "
        f"{', '.join(map(str, done)) or 'none yet'}.")
  mesh = mesh_lib.make_mesh(1)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  loop = build_loop(config, layout)
  consts = loop.source.consts()
  roots = rng.seed_keys(config.seed, config.num_seeds)
  compiled = CompiledLoop(loop, mesh, consts, roots)
  ckpts.verify("models", generation, "rerun the generation (remove it and the later ones, "
               "then rerun the training command) to rebuild it.")
  state = ckpts.restore_model(generation, compiled.abstract_carry.state,
                             mesh_lib.replicated(mesh))
  ckpts.close()
  tasks = jax.jit(jax.vmap(lambda r: loop.source.task(consts, rng.stream_key(r, "task"))))(roots)
  return Generation(config, loop, state, tasks, roots)


def sample_generation(gen: Generation, num: int, seed_index: int = 0, key_seed: int = 0):
  """``num`` samples (a batch of rows) from replicate ``seed_index`` of ``gen``'s model, with
  the key stream "user_sample" folded with ``key_seed``."""
  pick = lambda tree: jax.tree.map(lambda x: x[seed_index], tree)
  key = rng.stream_key(gen.roots[seed_index], "user_sample", key_seed)
  draw = jax.jit(lambda s, t, k: gen.loop.model.sample(s, t, k, num))
  return jax.device_get(draw(pick(gen.state), pick(gen.tasks), key))
