"""Sample quality of 2-D point models, per generation and seed (evaluator type "samples2d").

Per generation and seed, ``num_samples`` points are drawn from the generation's model (key
stream "samples2d") and compared with the replicate's held-out real points
(``tasks.test[spec.data]``):

  energy_distance, sliced_wasserstein     metrics/sample_distances.py (sliced W2 over
                                          ``num_projections`` fixed directions)
  energy_distance_floor,                  the same distances for ``num_samples`` fresh REAL
  sliced_wasserstein_floor                points (key stream "samples2d_floor", the same in
                                          every generation): what a perfect model scores
  modes_covered, off_mode_fraction        mode toys only (toy2d 8gaussians, blobs; the
                                          mixtures are data/toy2d.py's MODES): modes holding
                                          at least ``min_mode_fraction`` of their share of
                                          the samples within 3 std; samples farther than
                                          3 std from every mode

A family's own likelihood of the test points is the family's metric, not this evaluator's
(``test_nll``: KDE and Gaussian always, diffusion and flow families with model.exact_nll).

Artifacts: ``<workdir>/samples2d/generation_XXX.npz`` (``samples [seeds, n, 2]``, ``test
[seeds, n_test, 2]``, the metrics, the mixture when known) and ``<workdir>/plots/
samples2d.png`` (report/scatter.py), redrawn every ``plot_every`` generations and after the
last one.
"""
from __future__ import annotations

import pathlib

import chex
import jax
import ml_collections
import numpy as np

from collapse_jax import progress, rng, validate
from collapse_jax.data import toy2d
from collapse_jax.metrics import sample_distances as sd
from collapse_jax.parallel import distributed

OPTIONS = ("type", "num_samples", "num_projections", "projection_seed", "min_mode_fraction",
           "plot_every")
RANGES = {
    "num_samples": validate.Range(2, integer=True),  # a distance needs two points
    "num_projections": validate.COUNT,
    "projection_seed": validate.SEED,
    "min_mode_fraction": validate.Range(0, 1, low_open=True),
    "plot_every": validate.Range(0, integer=True, note="0: only after the last generation"),
}


def samples2d_eval(num_samples: int = 1000, *, num_projections: int = 64,
                   min_mode_fraction: float = 0.2, plot_every: int = 5
                   ) -> ml_collections.ConfigDict:
  """The ``config.evals.samples2d`` entry: ``c.evals.samples2d = samples2d_eval(1000)``."""
  return ml_collections.ConfigDict({
      "type": "samples2d", "num_samples": num_samples, "num_projections": num_projections,
      "projection_seed": 0, "min_mode_fraction": min_mode_fraction,
      "plot_every": plot_every})


def mixture_of(config) -> tuple[np.ndarray, float] | None:
  """``(centres [k, 2], std)`` of the run's real distribution when it is a mode toy."""
  data = config.data
  if data.get("source") == "toy2d" and data.get("name") in toy2d.MODES:
    return toy2d.MODES[data.name]
  return None


def inapplicable(options, config, spec) -> str | None:
  """Why the evaluator cannot apply to ``spec``'s rows (evals/base.py then drops it), or
  None: it measures 2-D points, e.g. not configs/gaussian.py's rows at data.dim = 1."""
  del options, config
  if spec is not None and tuple(spec.shape) != (2,):
    return (f"The samples2d evaluator needs 2-D points per row, but the data field "
            f"{spec.data!r} has rows of shape {tuple(spec.shape)}.")
  return None


def check_config(options, config, spec) -> str | None:
  """One sentence on what is wrong with ``options`` for ``config``'s rows, or None."""
  return (inapplicable(options, config, spec)
          or validate.fields_problem(options, RANGES, "samples2d "))


class Samples2D:
  """The evaluator; see the module docstring."""

  def __init__(self, options, context):
    self.workdir = pathlib.Path(context.workdir)
    self.num_samples = int(options["num_samples"])
    self.min_mode_fraction = float(options["min_mode_fraction"])
    self.plot_every = int(options["plot_every"])
    self.last_generation = int(context.config.num_generations) - 1
    self.directions = sd.random_directions(int(options["num_projections"]), 2,
                                           int(options["projection_seed"]))
    self.mixture = mixture_of(context.config)
    model, source = context.loop.model, context.loop.source
    self.field = field = source.row_spec.data
    n = self.num_samples

    def draw(state, task, root, g):
      return model.sample(state, task, rng.stream_key(root, "samples2d", g), n)[field]

    def real(consts, task, root):
      # Block 0: for a dataset-backed source these are training rows, i.e. real points
      # independent of the test set, which is all the floor needs.
      return source.real(consts, task, rng.stream_key(root, "samples2d_floor"), 0, n)[field]

    self._draw = jax.jit(jax.vmap(draw, in_axes=(0, 0, 0, None)))
    self._real = jax.jit(jax.vmap(real, in_axes=(None, 0, 0)))
    self._consts = context.consts
    self._floor = None  # per-seed floors: the tasks and keys are fixed, so computed once

  def _distances(self, x: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    return sd.energy_distance(x, test), sd.sliced_wasserstein(x, test, self.directions)

  def __call__(self, states, tasks, roots, generation: int) -> dict[str, np.ndarray]:
    """Per-seed metrics ``{name: [seeds]}`` of one generation; writes its samples (and the
    scatter figure every ``plot_every`` generations and after the last)."""
    samples = np.asarray(self._draw(states, tasks, roots, generation), np.float32)
    test = np.asarray(tasks.test[self.field], np.float32)
    chex.assert_shape(samples, (len(roots), self.num_samples, 2))
    chex.assert_shape(test, (len(roots), None, 2))
    if self._floor is None:
      # to_host: the consts are global arrays, so the real rows may be split over hosts.
      real = np.asarray(distributed.to_host(self._real(self._consts, tasks, roots)), np.float32)
      self._floor = np.array([self._distances(r, t) for r, t in zip(real, test)]).T
    ed, sw = np.array([self._distances(x, t) for x, t in zip(samples, test)]).T
    out = {"energy_distance": ed, "energy_distance_floor": self._floor[0].copy(),
           "sliced_wasserstein": sw, "sliced_wasserstein_floor": self._floor[1].copy()}
    extra = {}
    if self.mixture is not None:
      centres, std = self.mixture
      stats = [sd.mode_stats(x, centres, std, self.min_mode_fraction) for x in samples]
      out["modes_covered"] = np.array([s.covered for s in stats], np.float64)
      out["off_mode_fraction"] = np.array([s.far_fraction for s in stats], np.float64)
      extra = {"mode_centres": centres, "mode_std": np.float64(std)}
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    self._save(generation, samples, test, out, extra)
    return out

  def _save(self, generation, samples, test, metrics, extra) -> None:
    if jax.process_index() != 0:
      return
    folder = self.workdir / "samples2d"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"generation_{generation:03d}.npz"
    tmp = folder / f".generation_{generation:03d}.tmp.npz"
    np.savez(tmp, samples=samples, test=test, generation=np.int64(generation),
             **{f"metric_{k}": v for k, v in metrics.items()}, **extra)
    tmp.replace(path)  # atomic: a figure drawn concurrently never reads half a file
    every = self.plot_every
    if progress.figures_wanted() and (
        generation >= self.last_generation or (every and (generation + 1) % every == 0)):
      from collapse_jax.report import scatter  # lazy: matplotlib only when drawing
      scatter.plot_run(self.workdir)


def build(options, context) -> Samples2D:
  return Samples2D(options, context)
