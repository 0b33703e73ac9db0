"""2-D sample metrics (metrics/sample_distances.py), the samples2d evaluator and its figure."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import rng, validate
from collapse_jax.data import toy2d
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.evals import base as evals_base
from collapse_jax.evals import samples2d
from collapse_jax.metrics import sample_distances as sd
from collapse_jax.models import gaussian_mle
from collapse_jax.report import scatter

# One smoke config per 2-D family (the first of each tuple that exists: configs/ is being
# consolidated into one file per experiment with the policy as a variant).
TOY_FAMILIES = {"kde": ("kde_moons", "kde_moons:replace"),
                "gaussian_mle": ("gaussian", "gaussian:replace"),
                "diffusion": ("toy_diffusion_8gaussians",),
                "flow_matching": ("toy_flow", "toy_flow:replace")}


def _existing(names):
  from conftest import CONFIGS
  return next(n for n in names if (CONFIGS / f"{n}.py").exists())


def _mixture(rng_, n, shift=0.0):
  centres, std = toy2d.MODES["8gaussians"]
  return centres[rng_.integers(0, 8, n)] + std * rng_.standard_normal((n, 2)) + [shift, 0.0]


@pytest.mark.parametrize("name", ["energy", "sliced"])
def test_distances_sit_at_the_floor_for_one_distribution_and_grow_with_a_shift(name):
  dirs = sd.random_directions(64, 2)
  dist = {"energy": sd.energy_distance,
          "sliced": lambda x, y: sd.sliced_wasserstein(x, y, dirs)}[name]
  r = np.random.default_rng(0)
  test = _mixture(r, 1000)
  # Floors of independent real samples of the model's sample size: their spread bounds
  # what "the same distribution" can score.
  floors = np.array([dist(_mixture(r, 500), test) for _ in range(5)])
  same = dist(_mixture(r, 500), test)
  assert same <= floors.max() + 3 * floors.std()
  shifted = [dist(_mixture(r, 500, s), test) for s in (0.25, 0.5, 1.0, 2.0)]
  assert shifted[0] > floors.max() and shifted[-1] > 5 * floors.max()
  assert np.all(np.diff(shifted) > 0)
  # Sliced W2 of a pure translation (a fixed direction) is |shift| times the RMS cosine.
  if name == "sliced":
    expected = 2.0 * np.sqrt(np.mean(dirs[:, 0] ** 2))
    assert shifted[-1] == pytest.approx(expected, rel=0.05)


def test_sliced_wasserstein_is_exact_for_unequal_sizes():
  x = np.random.default_rng(1).standard_normal((30, 2))
  one = np.array([[1.0, 0.0]])
  # y = x with every point repeated 3 times is the same empirical measure.
  assert sd.sliced_wasserstein(x, np.repeat(x, 3, axis=0), one) == pytest.approx(0, abs=1e-12)
  assert sd.energy_distance(x, np.repeat(x, 3, axis=0)) == pytest.approx(0, abs=1e-6)


def test_mode_count_and_off_mode_fraction_are_exact_on_constructed_samples():
  centres, std = toy2d.MODES["8gaussians"]
  # Points 2.9 std from their centre. A mode is covered from 0.2 * 200 / 8 = 5 points: four
  # modes of 40 and one of 9 are, one of 4 is not; 27 points at the origin are off-mode.
  counts = [40, 40, 40, 40, 9, 4, 0, 0]
  x = np.concatenate([np.repeat(centres[i:i + 1], c, 0) + 2.9 * std * np.array([[0.6, 0.8]])
                      for i, c in enumerate(counts)] + [np.zeros((27, 2))])
  assert len(x) == 200
  stats = sd.mode_stats(x, centres, std, min_fraction=0.2)
  assert stats.covered == 5
  assert stats.far_fraction == pytest.approx(27 / 200)
  np.testing.assert_array_equal(stats.counts, counts)
  # Just beyond 3 std: the same points count as off-mode.
  far = sd.mode_stats(x + 0.02 * np.array([[0.6, 0.8]]), centres, std)
  assert far.covered == 0 and far.far_fraction == 1.0
  real = sd.mode_stats(_mixture(np.random.default_rng(2), 2000), centres, std)
  assert real.covered == 8 and real.far_fraction < 0.03


@dataclasses.dataclass(frozen=True)
class _Source:
  row_spec = RowSpec(fields={"x": ((2,), "float32")}, data="x")

  def real(self, consts, task, key, block, n):
    return {"x": jax.random.normal(key, (n, 2))}


@dataclasses.dataclass(frozen=True)
class _Loop:
  model: object
  source: object


def test_evaluator_metrics_npz_and_figure(tmp_path, monkeypatch):
  """Direct call on a standard normal model: distances at the floor, artifacts."""
  monkeypatch.setenv("COLLAPSE_JAX_PLOTS", "1")  # (the suite skips figures)
  import ml_collections
  config = ml_collections.ConfigDict({"num_generations": 2, "data": {"source": "gaussian"}})
  loop = _Loop(gaussian_mle.GaussianMLE(field="x", dim=2), _Source())
  ev = samples2d.build(samples2d.samples2d_eval(300, plot_every=0),
                       evals_base.Context(config=config, workdir=tmp_path, loop=loop, consts=()))
  seeds = 2
  roots = rng.seed_keys(0, seeds)
  test = jax.vmap(lambda k: jax.random.normal(k, (400, 2)))(roots)
  states = {"mu": jnp.zeros((seeds, 2)), "cov": jnp.tile(jnp.eye(2), (seeds, 1, 1))}
  tasks = Task(test={"x": test}, aux={})
  out = ev(states, tasks, roots, 0)
  assert set(out) == {"energy_distance", "energy_distance_floor", "sliced_wasserstein",
                      "sliced_wasserstein_floor"}
  assert all(v.shape == (seeds,) for v in out.values())
  assert np.all(out["energy_distance"] < 3 * out["energy_distance_floor"])
  # A shifted model is worse than the floor; the same call again is bitwise the same.
  shifted = ev({"mu": states["mu"] + 1.0, "cov": states["cov"]}, tasks, roots, 1)
  assert np.all(shifted["energy_distance"] > 3 * shifted["energy_distance_floor"])
  again = ev(states, tasks, roots, 0)
  assert all(np.array_equal(out[k], again[k]) for k in out)
  assert (tmp_path / "plots" / "samples2d.png").exists()  # drawn after the last generation
  with np.load(tmp_path / "samples2d" / "generation_001.npz") as f:
    assert f["samples"].shape == (seeds, 300, 2) and f["test"].shape == (seeds, 400, 2)
  png = scatter.scatter_comparison([tmp_path, tmp_path], tmp_path / "cmp.png",
                                   labels=["a", "b"])
  assert png.exists()
  with pytest.raises(FileNotFoundError):
    scatter.scatter_comparison([tmp_path / "nothing"], tmp_path / "x.png")


def test_check_config_refuses_bad_options(config_loader):
  config = config_loader("kde_moons:replace")
  spec = RowSpec(fields={"x": ((2,), "float32")}, data="x")
  assert samples2d.check_config(samples2d.samples2d_eval(64), config, spec) is None
  image = RowSpec(fields={"image": ((8, 8, 1), "float32")}, data="image")
  assert "2-D points" in samples2d.check_config(samples2d.samples2d_eval(64), config, image)
  assert "num_samples" in samples2d.check_config(samples2d.samples2d_eval(1), config, spec)
  from collapse_jax.evals import base
  config.evals.samples2d = {"type": "samples2d", "nsamples": 3}
  assert "config.evals.samples2d (samples2d) has no option nsamples; it takes exactly type, " \
      "num_samples" in base.check_config(config, spec)
  config.evals.samples2d = {"type": "samples2d", "num_samples": 3}
  assert "lacks option min_mode_fraction, num_projections" in base.check_config(config, spec)


@pytest.mark.parametrize("family", sorted(TOY_FAMILIES))
def test_evaluator_runs_on_every_2d_family_smoke_config(family, config_loader, tmp_path,
                                                        monkeypatch):
  """The evaluator on each family's freshly initialised models (sampling an untrained model
  is enough to exercise it; compiling the training loop too would triple the cost)."""
  monkeypatch.setenv("COLLAPSE_JAX_PLOTS", "1")  # (the suite skips figures)
  from collapse_jax import experiment
  config = config_loader(_existing(TOY_FAMILIES[family]))
  assert config.model.name == family
  config.num_generations = 1
  config.evals.samples2d = samples2d.samples2d_eval(64)
  validate.check(config)  # includes the evaluator's check_config
  loop = experiment.build_loop(config, validate.policy_of(config).layout(1, multiple_of=1))
  consts = loop.source.consts()
  roots = rng.seed_keys(config.seed, config.num_seeds)
  tasks = jax.jit(jax.vmap(lambda r: loop.source.task(consts, rng.stream_key(r, "task"))))(roots)
  states = jax.jit(jax.vmap(lambda r, t: loop.model.init(rng.stream_key(r, "init", 0), t)))(
      roots, tasks)
  ev = evals_base.build_all(config, evals_base.Context(config=config, workdir=tmp_path,
                                                       loop=loop, consts=consts))["samples2d"]
  out = ev(states, tasks, roots, 0)
  assert {"energy_distance", "sliced_wasserstein"} <= set(out)
  assert all(v.shape == (config.num_seeds,) and np.all(np.isfinite(v)) for v in out.values())
  assert ("modes_covered" in out) == (config.data.get("name") in toy2d.MODES)
  assert (pathlib.Path(tmp_path) / "plots" / "samples2d.png").exists()
