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
import shutil
import sys
import time

import jax
import numpy as np
from absl import logging

from collapse_jax import checkpoint, rng, validate
from collapse_jax.data import source as source_lib
from collapse_jax.loop.generation import CompiledLoop, Loop
from collapse_jax.loop.pool import PoolLayout
from collapse_jax.evals import base as evals_base
from collapse_jax.metrics import theory
from collapse_jax.models import base as model_base
from collapse_jax.parallel import mesh as mesh_lib
from collapse_jax.report import plots

# Fields that may change between a run and its continuation.
CONTINUABLE = ("num_generations", "generations_per_chunk", "mesh")


class NonFiniteError(RuntimeError):
  """A generation produced non-finite metrics; earlier generations are checkpointed."""


def run_or_exit(fn, *args, **kwargs):
  """``fn(*args, **kwargs)`` for a launcher: a user's mistake becomes one sentence on stderr
  and exit 2 (a run that went non-finite: exit 1), never a traceback."""
  try:
    return fn(*args, **kwargs)
  except (validate.ConfigError, checkpoint.CheckpointError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def configure_logging() -> None:
  """absl INFO logging for our progress, without Orbax's per-save INFO chatter."""
  logging.set_verbosity(logging.INFO)
  quiet = lambda r: r.levelno >= pylogging.WARNING or "orbax" not in r.pathname
  # Orbax logs through absl's logger; a filter there acts before any handler (absl's own
  # handler forwards records without applying the filters set on it).
  pylogging.getLogger("absl").addFilter(quiet)


def _config_dict(config) -> dict:
  return json.loads(config.to_json())


def prepare_workdir(config, workdir: pathlib.Path, overwrite: bool) -> None:
  """Refuses a workdir holding a different run (unless ``overwrite``, which empties it)."""
  saved = workdir / "config.json"
  if saved.exists() and not overwrite:
    old = json.loads(saved.read_text())
    new = _config_dict(config)
    differ = sorted(k for k in set(old) | set(new)
                    if k not in CONTINUABLE and old.get(k) != new.get(k))
    if differ:
      raise validate.ConfigError(
          f"{workdir} holds a run of a different config (fields {', '.join(differ)} differ); "
          "use another --workdir or pass --overwrite.")
  if overwrite and workdir.exists():
    shutil.rmtree(workdir)
  workdir.mkdir(parents=True, exist_ok=True)


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


def _resume(config, ckpts, compiled: CompiledLoop, mesh, consts, roots):
  """(generations done, carry, metrics history) from the latest loop checkpoint, or None."""
  step = ckpts.latest_loop_step()
  if step is None:
    return None
  meta = ckpts.restore_meta(step)
  if step >= config.num_generations:  # already done: nothing to continue
    return step, None, meta["history"][:config.num_generations]
  old_layout = PoolLayout(**meta["layout"])
  old = CompiledLoop(build_loop(config, old_layout), mesh, consts, roots)
  carry = ckpts.restore_carry(step, old.abstract_carry, old.carry_shardings)
  new_layout = compiled.loop.layout
  if old_layout != new_layout:
    carry = carry._replace(pool=jax.vmap(lambda p: p.resized(new_layout))(carry.pool))
    new_state = compiled.abstract_carry.state
    same = jax.tree.map(lambda a, b: a.shape == b.shape, carry.state, new_state)
    if not all(jax.tree.leaves(same)):
      # Only nonparametric states (KDE) are sized by the pool; a scratch run re-initialises
      # them anyway before the next fit.
      carry = carry._replace(state=compiled.init(consts, roots).state)
  return step, carry, meta["history"]


def train_and_evaluate(config, workdir: str | pathlib.Path, *, overwrite: bool = False
                       ) -> list[dict]:
  """Runs (or resumes) ``config`` in ``workdir``; returns the metrics rows."""
  validate.check(config)
  workdir = pathlib.Path(workdir)
  prepare_workdir(config, workdir, overwrite)

  # Mesh and the compiled loop.
  mesh = mesh_lib.make_mesh(config.mesh.data)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  loop = build_loop(config, layout)
  consts = loop.source.consts()
  roots = rng.seed_keys(config.seed, config.num_seeds)
  compiled = CompiledLoop(loop, mesh, consts, roots)

  # Start or resume.
  ckpts = checkpoint.RunCheckpoints(workdir)
  resumed = _resume(config, ckpts, compiled, mesh, consts, roots)
  if resumed is None:
    done, carry, history = 0, compiled.init(consts, roots), []
  else:
    done, carry, history = resumed
    logging.info("Resuming %s after generation %d.", workdir, done - 1)
  if jax.process_index() == 0:  # only now: a refused resume leaves the workdir as it was
    (workdir / "config.json").write_text(
        json.dumps(_config_dict(config), indent=2, sort_keys=True))

  evaluators = evals_base.build_all(
      config, evals_base.Context(config=config, workdir=workdir, loop=loop, consts=consts))

  # The generation loop, one compiled scan per chunk.
  total = config.num_generations
  chunk = config.generations_per_chunk or total
  start = time.time()
  first = done
  while done < total:
    gens = np.arange(done, min(done + chunk, total))
    carry, (metrics, states) = compiled.run(consts, carry, gens)
    # To host once: slicing device arrays per generation would compile a program per leaf.
    metrics, states = jax.device_get((metrics, states))
    for i, g in enumerate(gens):
      values = {k: np.asarray(v[:, i], np.float64) for k, v in metrics.items()}
      state = jax.tree.map(lambda x: x[:, i], states)
      for evaluator in evaluators.values():
        values |= evaluator(state, carry.task, carry.root, int(g))
      bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
      if bad:
        _write_metrics(config, workdir, history)
        ckpts.close()
        raise NonFiniteError(
            f"Generation {g} produced non-finite {', '.join(bad)}; generations up to "
            f"{g - 1} are checkpointed in {workdir}.")
      ckpts.save_model(int(g), state)
      history.append({k: v.tolist() for k, v in values.items()})
    done = int(gens[-1]) + 1
    ckpts.save_loop(done, carry, {"history": history, "layout": dataclasses.asdict(layout)})
    _write_metrics(config, workdir, history)
    elapsed = time.time() - start
    eta = elapsed / (done - first) * (total - done)
    summary = ", ".join(f"{k}={np.mean(v):.4g}" for k, v in history[-1].items())
    logging.info("generation %d/%d | %.1fs elapsed | ETA %.1fs | %s", done, total, elapsed,
                 eta, summary)
  ckpts.close()
  rows = _metric_rows(config, history)
  if jax.process_index() == 0:
    plots.plot_run(rows, workdir / "plots", title=f"{config.model.name}, {config.policy.name}")
  return rows
