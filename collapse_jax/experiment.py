"""train_and_evaluate: a whole self-consuming run in a workdir, resumable at any chunk.

    <workdir>/config.json       the run's config (a different config is refused)
    <workdir>/metrics.jsonl     one row per generation per seed, theory columns beside
    <workdir>/checkpoints/      Orbax: each generation's model, loop state per chunk
    <workdir>/plots/*.png       metric vs generation, mean and spread over seeds
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as pylogging
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from collapse_jax import checkpoint, environment, errors, host_memory, presets, progress
from collapse_jax import resume, rng
from collapse_jax import segments, validate
from collapse_jax import workdir as workdir_lib
from collapse_jax.data import source as source_lib
from collapse_jax.loop import curation
from collapse_jax.loop.generation import CompiledLoop, Loop, compiled_loop
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
  old = presets.fill_later_fields(old, new)  # a run from before a shared field existed
  differ = sorted(k for k in set(old) | set(new)
                  if k not in CONTINUABLE and old.get(k) != new.get(k))
  if differ:
    raise validate.ConfigError(
        f"{workdir} holds a run of a different config (fields {', '.join(differ)} differ); "
        "use another --workdir, or pass --overwrite to delete that run.")


def build_loop(config, layout: PoolLayout, source=None) -> Loop:
  """The run's `Loop`; ``source``: an already built source of ``config.data``."""
  source = source or source_lib.source_module(config.data.source).build(config.data)
  model = model_base.family(config.model.name).build(config, layout, source.row_spec)
  loop = Loop(model=model, source=source, policy=validate.policy_of(config), layout=layout,
              train_from=config.train_from,
              train_rows=max(evals_base.training_rows(config, source.row_spec).values(),
                             default=0))
  return dataclasses.replace(loop, curation=curation.build(config, loop))


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


@dataclasses.dataclass(eq=False)
class _Run:
  """One workdir's share of a compiled loop: replicates ``[lo, hi)`` of its carry, and what
  the driver keeps for it between chunks."""
  config: Any
  workdir: pathlib.Path
  loop: Loop           # built from this run's config (its evaluators read it)
  lo: int
  hi: int
  ckpts: Any = None
  history: list = dataclasses.field(default_factory=list)
  curves: dict = dataclasses.field(default_factory=dict)
  slices: list = dataclasses.field(default_factory=list)
  evaluators: dict = dataclasses.field(default_factory=dict)
  see_training: dict = dataclasses.field(default_factory=dict)
  reporter: Any = None


def train_and_evaluate(config, workdir: str | pathlib.Path, *, overwrite: bool = False,
                       resume_from_intact: bool = False) -> list[dict]:
  """Runs (or resumes) ``config`` in ``workdir``; returns the metrics rows.

  ``resume_from_intact``: if the newest checkpoint is damaged, continue from the newest
  intact one (the damaged ones are moved to checkpoints/damaged/); without it, a damaged
  checkpoint stops the run with one sentence.
  """
  return train_and_evaluate_side_by_side([config], [workdir], (), overwrite=overwrite,
                                         resume_from_intact=resume_from_intact)[0]


def train_and_evaluate_side_by_side(configs: list, workdirs: list, inputs: tuple[str, ...], *,
                                    overwrite: bool = False,
                                    resume_from_intact: bool = False) -> list[list[dict]]:
  """Runs configs that differ only in the scalar fields ``inputs`` as one compiled loop, each
  in its own workdir (a normal run there), their seeds side by side; returns each one's
  metrics rows. With one config and no inputs it is `train_and_evaluate`. Raises
  `NotSideBySide` (before any workdir is touched) when a field of ``inputs`` cannot be a
  traced input of the loop (it sets a shape or a Python branch), or a workdir already holds
  a run: those configs run one after another.
  """
  started = time.time()
  rng.configure_jax()
  host_memory.reuse_host_temporaries()
  for config in configs:
    validate.check(config)
  if not distributed.same_everywhere(json.dumps([_config_dict(c) for c in configs])):
    raise validate.ConfigError(
        f"The {jax.process_count()} processes of this run were given different configs; "
        "every host must run the same command.")
  config = configs[0]

  # Mesh, data and the compiled loop, before any workdir is touched.
  mesh = mesh_lib.from_config(config.mesh)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  with validate.fields_read():
    loops = [build_loop(c, layout) for c in configs]
  source = loops[0].source  # on the mesh: training rows split, each process loading its own
  load = lambda rows: source.consts() if rows is None else source.consts(rows=rows)
  try:
    consts = mesh_lib.place_consts(load, source.num_train, mesh)
  except ValueError as e:  # validation does not decode every file (e.g. an image folder's)
    raise validate.ConfigError(str(e)) from e
  seeds = config.num_seeds
  roots = np.concatenate([rng.seed_keys(c.seed, seeds) for c in configs])
  workdirs = [workdir_lib.check_path(w) for w in workdirs]
  runs = [_Run(c, w, l, i * seeds, (i + 1) * seeds)
          for i, (c, w, l) in enumerate(zip(configs, workdirs, loops))]
  compiled = _compile(runs, inputs, mesh, consts, roots, overwrite)
  problem = _never_fits(config, compiled, mesh)
  if problem:
    raise validate.ConfigError(problem)
  if overwrite:
    for w in workdirs:
      workdir_lib.check_clearable(w)  # before the lock file lands in a folder it refuses
  with contextlib.ExitStack() as held:
    for run in runs:
      held.enter_context(workdir_lib.hold(run.workdir, jax.process_index()))
      if not overwrite:
        check_same_run(run.config, run.workdir)
      elif jax.process_index() == 0:  # only now: every check has passed and no one else runs
        workdir_lib.clear_run(run.workdir)
    distributed.barrier("prepare_workdir")
    for run in runs:
      _check_shared(run.workdir)
    return _run(runs, compiled, mesh, consts, roots, resume_from_intact, started)


def _check_shared(workdir: pathlib.Path) -> None:
  """Refuses, on every process together, a multi-host run whose processes do not see one
  workdir (different paths, or each its node-local disk): they would wait forever for each
  other's share of each collective checkpoint. Process 0 writes a marker named for this run
  alone (no file an earlier run left can pass for it) and every process looks for it."""
  if jax.process_count() == 1:
    return
  marker = workdir / f".lock.shared.{distributed.shared_token()}"
  if jax.process_index() == 0:
    marker.touch()
  try:
    distributed.barrier("workdir_marker")
    shared = distributed.everywhere(marker.exists())
  finally:
    if jax.process_index() == 0:
      marker.unlink(missing_ok=True)
  if not shared:
    raise workdir_lib.WorkdirError(
        f"The {jax.process_count()} processes of this run do not share one workdir "
        f"({workdir} here lacks the marker process 0 wrote in its own): give every process "
        "the same --workdir, on storage that all hosts see.")


def _never_fits(config, compiled: CompiledLoop, mesh) -> str | None:
  """One sentence when the pool and a compiled chunk's per-generation model states (all
  seeds; a lower bound of what a chunk holds) exceed all of the mesh's memory."""
  chunk = config.generations_per_chunk or config.num_generations
  carry = compiled.abstract_carry
  need = host_memory.nbytes(carry.pool) + (chunk + 1) * host_memory.nbytes(carry.state)
  what = (f"The run (its data pool, and the model states of {chunk} generation"
          f"{'s' * (chunk != 1)} per compiled chunk)")
  return host_memory.too_large(need, what, mesh.devices.flat,
                               "lower num_generations or n_synth, or set generations_per_chunk")


class NotSideBySide(Exception):
  """Configs given to `train_and_evaluate_side_by_side` that must run one after another;
  the message says why."""


def _compile(runs: list[_Run], inputs: tuple[str, ...], mesh, consts, roots,
             overwrite: bool) -> CompiledLoop:
  """The compiled loop of ``runs``: one run's, or several runs' side by side with their
  ``inputs`` fields as per-replicate scalars (checked by tracing it here)."""
  if len(runs) == 1 and not inputs:
    return compiled_loop(runs[0].loop, mesh, consts, roots)
  from collapse_jax import sweep  # the fields' values as numbers
  if not overwrite and any(workdir_lib.read_config(r.workdir) for r in runs):
    raise NotSideBySide("a point's workdir already holds a run (it resumes on its own)")
  if jax.process_count() > 1:
    raise NotSideBySide("side-by-side points run in one process")
  base, loop = runs[0].config, runs[0].loop
  fields = [sweep.flat(r.config) for r in runs]
  others = [{k: v for k, v in f.items() if k not in inputs} for f in fields]
  if any(o != others[0] for o in others):
    raise NotSideBySide(f"the configs differ in more than {', '.join(inputs)}")
  seeds = runs[0].hi - runs[0].lo
  # float32 and int32, the dtypes the configs' Python numbers take in the loop.
  values = {f: np.repeat(np.asarray([sweep.number(fs[f]) for fs in fields]), seeds)
            for f in inputs}
  values = {f: v.astype(np.float32 if v.dtype.kind == "f" else np.int32)
            for f, v in values.items()}

  def build(scalars: dict) -> Loop:
    config = ml_collections.ConfigDict(base.to_dict(), type_safe=False)
    for field, value in scalars.items():
      sweep.put(config, field, value)
    return build_loop(config, loop.layout, loop.source)
  try:
    compiled = CompiledLoop(runs[0].loop, mesh, consts, roots, inputs=(values, build))
    if segments.segment_steps(base, compiled.loop, compiled):
      raise NotSideBySide("its generations train in checkpointed segments")
    compiled.trace_run(consts, base.generations_per_chunk or base.num_generations)
  except NotSideBySide:
    raise
  except Exception as e:  # a field the loop needs as a Python value  # noqa: BLE001
    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise NotSideBySide(f"{', '.join(inputs)} is not a traced input of this loop (it sets a "
                        f"shape, a count or a branch: {why})") from e
  logging.info("%d runs side by side in one compiled loop, differing in %s.", len(runs),
               ", ".join(inputs))
  return compiled


def _run(runs: list[_Run], compiled: CompiledLoop, mesh, consts, roots,
         resume_from_intact: bool, started: float) -> list[list[dict]]:
  """`train_and_evaluate_side_by_side` in workdirs this process holds, checked and ready."""
  config = runs[0].config
  seg_steps = segments.segment_steps(config, compiled.loop, compiled)
  seg = compiled.segmented(seg_steps, config.sample_chunk_rows) if seg_steps else None

  # Start or resume (only a run alone resumes: `_compile` gives a group fresh workdirs).
  for run in runs:
    run.ckpts = checkpoint.RunCheckpoints(run.workdir)
  resumed = None
  if len(runs) == 1:
    run = runs[0]
    compile_layout = lambda layout: compiled_loop(build_loop(config, layout), mesh, consts,
                                                  roots)
    resumed = resume.restore(config, run.ckpts, compiled, compile_layout, mesh, consts, roots,
                             run.workdir, resume_from_intact)
  if resumed is None:
    done, carry = 0, compiled.init(consts, roots)
  else:
    done, carry, run.history, run.curves, run.slices = resumed
    logging.info("Resuming %s after generation %d.", run.workdir, done - 1)
  for run in runs:
    if jax.process_index() == 0:  # only now: a refused resume leaves the workdir as it was
      (run.workdir / "config.json").write_text(
          json.dumps(_config_dict(run.config), indent=2, sort_keys=True))
      notice = environment.record(run.workdir, done)
      if notice:
        logging.warning(notice)
    run.evaluators = evals_base.build_all(run.config, evals_base.Context(
        config=run.config, workdir=run.workdir, loop=run.loop, consts=consts))
    run.see_training = evals_base.training_rows(run.config, run.loop.source.row_spec)
    run.reporter = progress.Reporter(run.workdir, config.num_generations)
  # A run's replicates of the carry (the carry itself for a run alone).
  alone = len(runs) == 1
  takes = [jax.jit(lambda t, lo=r.lo, hi=r.hi: jax.tree.map(lambda x: x[lo:hi], t))
           for r in runs]
  mine = lambda i, tree: tree if alone else takes[i](tree)

  # The generation loop: one compiled scan per chunk, or one generation in segments.
  chunk = 1 if seg else (config.generations_per_chunk or config.num_generations)
  start = time.time()
  first = done
  stop = progress.StopRequest()
  try:
    with stop.installed():
      while done < config.num_generations:
        gens = np.arange(done, min(done + chunk, config.num_generations))
        if seg:
          run = runs[0]
          carry, outputs, run.curves[str(done)] = segments.run_generation(
              config, run.workdir, done, seg, run.ckpts, consts, carry, run.reporter, stop,
              compiled.abstract_carry.state, compiled.carry_shardings.state)
        else:
          carry, outputs = compiled.run(consts, carry, gens)
        # To host once: slicing device arrays per generation would compile a program per leaf.
        metrics, states, training = distributed.to_host(outputs)
        for i, run in enumerate(runs):
          task, root = mine(i, (carry.task, carry.root))
          for j, g in enumerate(gens):
            _end_generation(run, int(g), task, root, *jax.tree.map(
                lambda x: x[run.lo:run.hi, j], (metrics, states, training)))
        done = int(gens[-1]) + 1
        for i, run in enumerate(runs):
          meta = {"history": run.history, "curves": run.curves,
                  "layout": dataclasses.asdict(compiled.loop.layout)}
          # The real set (block 0) with the first save, then the blocks this chunk wrote.
          blocks = ([0] if not run.slices else []) + [int(g) + 1 for g in gens]
          run.slices = resume.save(run.ckpts, compiled, done, mine(i, carry), meta,
                                   run.slices, blocks)
          if seg:
            run.ckpts.drop_in_progress(done - 1)
          _write_metrics(run.config, run.workdir, run.history)
          if jax.process_index() == 0 and run.curves and progress.figures_wanted():
            curve_plots.plot_training_curves(run.curves, run.workdir / "plots" / "train_loss.png")
        host_memory.release_freed_host_memory()
        elapsed = time.time() - start
        eta = elapsed / (done - first) * (config.num_generations - done)
        summary = ", ".join(f"{k}={np.mean(v):.4g}" for k, v in runs[0].history[-1].items())
        # Generations count from 0 here as in metrics, reports and checkpoints.
        logging.info("generation %d done (%d of %d) | %.1fs elapsed | ETA %.1fs | %s",
                     done - 1, done, config.num_generations, elapsed, eta, summary)
        if stop.requested and done < config.num_generations:
          raise progress.Preempted(
              f"Stopped on SIGTERM after generation {done - 1}, checkpointed in "
              f"{', '.join(str(r.workdir) for r in runs)}; rerun the same command to continue.")
  finally:
    for run in runs:
      if run.reporter:
        run.reporter.close()
      run.ckpts.close()
  out = []
  for run in runs:
    _write_metrics(run.config, run.workdir, run.history)  # also rewrites a damaged file
    rows = _metric_rows(run.config, run.history)
    if jax.process_index() == 0:
      if progress.figures_wanted():
        plots.plot_run(rows, run.workdir / "plots",
                       title=f"{run.config.model.name}, {run.config.policy.name}")
      _add_wall_time(run.workdir, (time.time() - started) / len(runs))  # its share
    out.append(rows)
  return out


def _end_generation(run: _Run, g: int, task, root, metrics: dict, state, training) -> None:
  """Generation ``g`` of ``run`` (its replicates' outputs, on the host): the evaluators,
  a finiteness check, the model checkpoint, history and progress."""
  values = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
  for name, evaluator in run.evaluators.items():
    extra = {"training": training} if name in run.see_training else {}
    values |= evaluator(state, task, root, g, **extra)
  curation.warn_if_topped_up(run.config, g, values)
  bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
  if bad:
    _write_metrics(run.config, run.workdir, run.history)
    raise errors.NonFiniteError(
        f"Generation {g} produced non-finite {', '.join(bad)}; "
        + (f"generations up to {g - 1} are checkpointed in {run.workdir}." if g else
           "no generation finished, so none is checkpointed."))
  run.ckpts.save_model(g, state)
  run.history.append({k: v.tolist() for k, v in values.items()})
  run.reporter.end_generation(g, values)


def _add_wall_time(workdir: pathlib.Path, seconds: float) -> None:
  """Adds this invocation's wall time to ``timing.json`` (a resumed run sums its parts)."""
  path = workdir / "timing.json"
  before = json.loads(path.read_text()).get("wall_s", 0.0) if path.exists() else 0.0
  path.write_text(json.dumps({"wall_s": round(before + seconds, 1)}) + "\n")
