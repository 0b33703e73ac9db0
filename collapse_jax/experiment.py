"""train_and_evaluate: a whole self-consuming run in a workdir, resumable at any chunk.

    <workdir>/config.json       the run's config (a different config is refused)
    <workdir>/metrics.jsonl     one row per generation per seed, theory columns beside
    <workdir>/checkpoints/      Orbax: each generation's model, loop state per chunk
    <workdir>/plots/*.png       metric vs generation, mean and spread over seeds
"""
from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import pathlib
import time

import jax
import numpy as np
from absl import logging

from collapse_jax import checkpoint, environment, errors, host_memory, progress, resume, rng
from collapse_jax import segments, validate
from collapse_jax import workdir as workdir_lib
from collapse_jax.data import source as source_lib
from collapse_jax.loop import curation
from collapse_jax.loop.generation import CompiledLoop, Loop, SegmentedLoop
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
  if new["curation"]["rule"] == "none":
    old.setdefault("curation", new["curation"])  # a run from before curation existed
  differ = sorted(k for k in set(old) | set(new)
                  if k not in CONTINUABLE and old.get(k) != new.get(k))
  if differ:
    raise validate.ConfigError(
        f"{workdir} holds a run of a different config (fields {', '.join(differ)} differ); "
        "use another --workdir, or pass --overwrite to delete that run.")


def build_loop(config, layout: PoolLayout) -> Loop:
  source = source_lib.source_module(config.data.source).build(config.data)
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


def train_and_evaluate(config, workdir: str | pathlib.Path, *, overwrite: bool = False,
                       resume_from_intact: bool = False) -> list[dict]:
  """Runs (or resumes) ``config`` in ``workdir``; returns the metrics rows.

  ``resume_from_intact``: if the newest checkpoint is damaged, continue from the newest
  intact one (the damaged ones are moved to checkpoints/damaged/); without it, a damaged
  checkpoint stops the run with one sentence.
  """
  started = time.time()
  rng.configure_jax()
  host_memory.reuse_host_temporaries()
  validate.check(config)

  # Mesh, data and the compiled loop, before the workdir is touched.
  mesh = mesh_lib.from_config(config.mesh)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  with validate.fields_read():
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
  seg_steps = segments.segment_steps(config, loop, compiled)
  seg = None
  if seg_steps:
    seg = SegmentedLoop(compiled, seg_steps, config.sample_chunk_rows)

  # Start or resume.
  ckpts = checkpoint.RunCheckpoints(workdir)
  compile_layout = lambda layout: CompiledLoop(build_loop(config, layout), mesh, consts, roots)
  resumed = resume.restore(config, ckpts, compiled, compile_layout, mesh, consts, roots, workdir,
                           resume_from_intact)
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
  see_training = evals_base.training_rows(config, loop.source.row_spec)
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
          carry, outputs, curves[str(done)] = segments.run_generation(
              config, workdir, done, seg, ckpts, consts, carry, reporter, stop,
              compiled.abstract_carry.state, compiled.carry_shardings.state)
        else:
          carry, outputs = compiled.run(consts, carry, gens)
        # To host once: slicing device arrays per generation would compile a program per leaf.
        metrics, states, training = distributed.to_host(outputs)
        for i, g in enumerate(gens):
          values = {k: np.asarray(v[:, i], np.float64) for k, v in metrics.items()}
          state, rows = jax.tree.map(lambda x: x[:, i], (states, training))
          for name, evaluator in evaluators.items():
            extra = {"training": rows} if name in see_training else {}
            values |= evaluator(state, carry.task, carry.root, int(g), **extra)
          curation.warn_if_topped_up(config, int(g), values)
          bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
          if bad:
            _write_metrics(config, workdir, history)
            raise errors.NonFiniteError(
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
        slices = resume.save(ckpts, compiled, done, carry, meta, slices, blocks)
        if seg:
          ckpts.drop_in_progress(done - 1)
        host_memory.release_freed_host_memory()
        _write_metrics(config, workdir, history)
        if jax.process_index() == 0 and curves and progress.figures_wanted():
          curve_plots.plot_training_curves(curves, workdir / "plots" / "train_loss.png")
        elapsed = time.time() - start
        eta = elapsed / (done - first) * (total - done)
        summary = ", ".join(f"{k}={np.mean(v):.4g}" for k, v in history[-1].items())
        # Generations count from 0 here as in metrics, reports and checkpoints.
        logging.info("generation %d done (%d of %d) | %.1fs elapsed | ETA %.1fs | %s",
                     done - 1, done, total, elapsed, eta, summary)
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
    if progress.figures_wanted():
      plots.plot_run(rows, workdir / "plots",
                     title=f"{config.model.name}, {config.policy.name}")
    _add_wall_time(workdir, time.time() - started)
  return rows


def _add_wall_time(workdir: pathlib.Path, seconds: float) -> None:
  """Adds this invocation's wall time to ``timing.json`` (a resumed run sums its parts)."""
  path = workdir / "timing.json"
  before = json.loads(path.read_text()).get("wall_s", 0.0) if path.exists() else 0.0
  path.write_text(json.dumps({"wall_s": round(before + seconds, 1)}) + "\n")
