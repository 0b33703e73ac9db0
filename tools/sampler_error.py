"""Measures the error GeoDiff's Langevin sampler leaves in the conformers of a finished
molecule run: generation g's model samples conformers for held-out test molecules, each
scored against that molecule's reference ensemble (docs/RESULTS.md, "Sampler quality").

    python tools/sampler_error.py --workdir=runs/qm9 [--generation=0] [--molecules=25] \
        [--per_reference=2] [--steps=1000] [--json=qm9_g0.json]

The first ``--molecules`` test molecules of the run's source (data/molecules.py: the test
split, whole ensembles) get ``--per_reference`` conformers per reference conformer, drawn
exactly as the COV/MAT evaluator draws them (evals/conformer_quality.py's ``build``: the
model's own ``sample`` with the test graphs, each row once, key ``conformer_eval``/g) from
replicate 0, with the run's sampler or ``--steps`` Langevin steps (model.sampler_steps,
checked as the config is). Prints one table row:

    exploded   share of conformers more than EXPLODED (3 A) best RMSD from every reference
               (a non-finite conformer counts as exploded)
    sanitise   share whose geometry gives back the input bond graph and sanitises
               (conformer_quality.sanitizes)
    best RMSD  median over conformers of min over references of RDKit's symmetry-aware
               GetBestRMS on heavy atoms (conformer_quality.rmsd_matrix)
    bond error |length - the references' mean length| of every bond of the molecule graph
               (hydrogens included where the rows hold them), pooled over all bonds of all
               conformers: its median, and its RMS with each error capped at CAP (1 A) so a
               few exploded conformers do not decide it (non-finite: the cap)
    seconds    sampling (compiled beforehand, so compile time is left out); scoring and
               compiling are reported apart

A workdir without a run, a run that is not a geodiff molecule run, or a generation whose
model was not saved: one ``error:`` sentence on stderr and exit 2.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
from absl import flags

from collapse_jax import cli

EXPLODED = 3.0  # A: best RMSD beyond which a conformer is no conformer of the molecule
CAP = 1.0       # A: bond errors capped at this in the RMS


def define_flags() -> dict:
  """The command line's flags, defined only when this file runs as a script: the tests
  import its functions beside launchers that define flags of the same names."""
  out = {
      "workdir": flags.DEFINE_string("workdir", None, "The finished molecule run's directory."),
      "generation": flags.DEFINE_integer("generation", 0, "Which generation's model."),
      "molecules": flags.DEFINE_integer("molecules", 25,
                                        "Test molecules scored (the first ones)."),
      "per_reference": flags.DEFINE_integer("per_reference", 2,
                                            "Conformers sampled per reference conformer."),
      "steps": flags.DEFINE_integer(
          "steps", None, "Langevin sampler steps (default: the run's model.sampler_steps)."),
      "json": flags.DEFINE_string("json", None, "Also write the row, as JSON, to this file."),
  }
  flags.mark_flags_as_required(["workdir"])
  return out


# --- The metrics (numpy, no model: tests/test_sampler_error.py) ---------------------------

def bond_pairs(bonds: np.ndarray) -> np.ndarray:
  """``[B, 2]`` atom index pairs ``i < j`` of the bonds of a ``[n, n]`` bond-code matrix
  (0: no bond; the edge codes of atoms 2-3 bonds apart are not in it)."""
  return np.argwhere(np.triu(np.asarray(bonds) > 0, k=1))


def bond_lengths(pos: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """``[..., B]`` lengths of bonds ``pairs [B, 2]`` in conformers ``pos [..., n, 3]``."""
  return np.linalg.norm(pos[..., pairs[:, 0], :] - pos[..., pairs[:, 1], :], axis=-1)


def bond_errors(refs: np.ndarray, gens: np.ndarray, bonds: np.ndarray) -> np.ndarray:
  """``[G, B]`` |length - mean reference length| of each bond of ``bonds [n, n]`` in each
  conformer of ``gens [G, n, 3]``, the mean over ``refs [R, n, 3]``; +inf where a
  conformer is not finite (so it is never mistaken for a small error)."""
  pairs = bond_pairs(bonds)
  mean = bond_lengths(np.asarray(refs, np.float64), pairs).mean(0)
  err = np.abs(bond_lengths(np.asarray(gens, np.float64), pairs) - mean)
  return np.where(np.isfinite(err), err, np.inf)


def best_rmsd(smiles: str, refs: np.ndarray, gens: np.ndarray) -> np.ndarray:
  """``[G]`` RMSD of each conformer of ``gens [G, n, 3]`` to its nearest reference of
  ``refs [R, n, 3]`` (the evaluator's symmetry-aware heavy-atom RMSD; +inf: not finite)."""
  from collapse_jax.evals import conformer_quality
  return conformer_quality.rmsd_matrix(smiles, refs, gens).min(0)


def summarize(best: np.ndarray, errors: np.ndarray, sane: np.ndarray) -> dict[str, float]:
  """The row's metrics from per-conformer ``best [N]`` RMSDs and sanitisation ``sane [N]``,
  and the pooled bond ``errors [E]`` (see the module docstring)."""
  best, errors = np.asarray(best, np.float64), np.asarray(errors, np.float64)
  errors = np.where(np.isnan(errors), np.inf, errors)  # a NaN length is no small error
  capped = np.minimum(errors, CAP)
  return {"conformers": int(best.size),
          "exploded": float(np.mean(~(best <= EXPLODED))),  # inf and NaN count as exploded
          "sanitise": float(np.mean(sane)),
          "best_rmsd_median": float(np.median(best)),
          "bond_error_median": float(np.median(errors)),
          "bond_error_rms": float(np.sqrt(np.mean(capped ** 2)))}


def score(molecules: list, refs: list[np.ndarray], pos: np.ndarray, owner: np.ndarray
          ) -> dict[str, float]:
  """Metrics of sampled positions ``pos [G, A, 3]`` (padded) of molecules ``owner [G]``
  (indices into ``molecules``, whose reference ensembles are ``refs``, each ``[R, n, 3]``)."""
  from collapse_jax.evals import conformer_quality
  best, errors, sane = [], [], []
  for i, mol in enumerate(molecules):
    gens = pos[owner == i][:, :len(mol.atoms)]
    best.append(best_rmsd(mol.smiles, refs[i], gens))
    errors.append(bond_errors(refs[i], gens, mol.bonds).ravel())
    sane += [conformer_quality.sanitizes(mol.smiles, g) for g in gens]
  return summarize(np.concatenate(best), np.concatenate(errors), np.asarray(sane))


# --- The run ------------------------------------------------------------------------------

def check_run(workdir: pathlib.Path) -> None:
  """Refuses a workdir without a run (FileNotFoundError, `inference.load_generation`'s
  sentence) or whose run is not a geodiff molecule run (ConfigError), before JAX starts and
  the model and data are loaded."""
  from collapse_jax import validate
  saved = workdir / "config.json"
  if not saved.is_file():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json).")
  config = json.loads(saved.read_text())
  source = config.get("data", {}).get("source")
  model = config.get("model", {}).get("name")
  if source != "molecules" or model != "geodiff":
    raise validate.ConfigError(
        f"{workdir} is not a molecule run (data.source {source!r}, model.name {model!r}); "
        "this tool needs data.source = 'molecules' and model.name = 'geodiff'.")


def check_args(workdir: str, molecules: int, per_reference: int) -> None:
  """The refusals that need no model: counts, and `check_run`."""
  from collapse_jax import validate
  if molecules < 1 or per_reference < 1:
    raise validate.ConfigError("--molecules and --per_reference must be positive.")
  check_run(pathlib.Path(workdir))


def with_steps(gen, steps: int | None):
  """``gen.loop.model`` with ``steps`` Langevin steps (None: as trained), the value checked
  as the config check does (models/geodiff.py)."""
  from collapse_jax import validate
  from collapse_jax.models import geodiff
  model = gen.loop.model
  if steps is None:
    return model
  config = gen.config.copy_and_resolve_references()
  config.model.sampler_steps = steps
  problem = geodiff.check_config(config, gen.loop.source.row_spec)
  if problem:
    raise validate.ConfigError(f"--steps={steps}: {problem}")
  return dataclasses.replace(model, process=dataclasses.replace(model.process,
                                                                sampler_steps=steps))


def measure(workdir: str, generation: int, molecules: int, per_reference: int,
            steps: int | None) -> dict:
  """Samples and scores (see the module docstring); the row as a dict."""
  check_args(workdir, molecules, per_reference)
  import jax
  from collapse_jax import inference, rng
  from collapse_jax.data.source import Task
  from collapse_jax.evals import base, conformer_quality
  gen = inference.load_generation(workdir, generation)
  model = with_steps(gen, steps)
  # The evaluator's own sampling for these molecules (its build reads only loop.model and
  # loop.source), with this model.
  loop = dataclasses.replace(gen.loop, model=model)
  context = base.Context(config=gen.config, workdir=pathlib.Path(workdir), loop=loop,
                         consts=None)
  ev = conformer_quality.build({"num_molecules": molecules, "max_refs": 0,
                                "ratio": per_reference}, context)
  state = jax.tree.map(lambda x: x[0], gen.state)  # replicate 0
  task = Task(test=jax.tree.map(lambda x: x[0], gen.tasks.test), aux={"graphs": ev.graphs})
  key = rng.stream_key(gen.roots[0], "conformer_eval", generation)
  t0 = time.perf_counter()
  compiled = ev.generate.lower(state, task, key).compile()
  t1 = time.perf_counter()
  rows = jax.device_get(jax.block_until_ready(compiled(state, task, key)))
  t2 = time.perf_counter()
  row = score(ev.molecules, ev.refs, np.asarray(rows["pos"]), np.asarray(rows["mol_id"]))
  t3 = time.perf_counter()
  return {"workdir": str(workdir), "generation": generation,
          "steps": model.process.sampler_steps, "molecules": len(ev.molecules),
          "references": int(sum(len(r) for r in ev.refs)), **row,
          "sample_s": t2 - t1, "compile_s": t1 - t0, "score_s": t3 - t2}


def table(row: dict) -> str:
  """The row under the header of docs/RESULTS.md's "Sampler quality" table."""
  n = row["conformers"]
  return "\n".join([
      "| sampler | exploded (> 3 A) | sanitise | best RMSD median | bond error median / RMS "
      f"| s per {n} conformers |",
      "|---|---|---|---|---|---|",
      f"| {row['steps']} steps | {row['exploded']:.1%} | {row['sanitise']:.0%} "
      f"| {row['best_rmsd_median']:.2f} A | {row['bond_error_median']:.3f} / "
      f"{row['bond_error_rms']:.3f} A | {row['sample_s']:.0f} |",
      f"({row['molecules']} test molecules, {row['references']} references; compile "
      f"{row['compile_s']:.0f} s, scoring {row['score_s']:.0f} s)"])


def main(argv, args: dict):
  del argv  # cli.run refuses positional arguments
  a = {name: flag.value for name, flag in args.items()}
  # First, so a refused workdir costs no JAX start (configure_logging starts it).
  check_args(a["workdir"], a["molecules"], a["per_reference"])
  from collapse_jax import experiment
  experiment.configure_logging()
  row = measure(a["workdir"], a["generation"], a["molecules"], a["per_reference"], a["steps"])
  print(table(row))
  if a["json"]:
    out = pathlib.Path(a["json"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
  _args = define_flags()
  cli.run(lambda argv: main(argv, _args))
