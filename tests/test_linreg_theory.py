"""Monte Carlo of the linear-regression protocol against the closed forms
(Gerstgrasser et al. 2024, section 2)."""
import numpy as np
import pytest

from collapse_jax.experiment import build_loop
from collapse_jax.loop.generation import CompiledLoop
from collapse_jax.metrics import theory
from collapse_jax.parallel.mesh import make_mesh
from collapse_jax import rng, validate

from conftest import load_config


def _run(config):
  """Per-generation metrics ``{name: [seeds, generations]}`` of ``config`` on one device."""
  layout = validate.policy_of(config).layout(config.num_generations)
  loop = build_loop(config, layout)
  consts, roots = loop.source.consts(), rng.seed_keys(0, config.num_seeds)
  compiled = CompiledLoop(loop, make_mesh(1), consts, roots)
  carry = compiled.init(consts, roots)
  return compiled.run(consts, carry, np.arange(config.num_generations))[1][0]


@pytest.mark.parametrize("policy", ["replace", "accumulate", "real_only", "more_real"])
def test_monte_carlo_matches_closed_form_within_5_percent(policy):
  config = load_config(f"linreg:{policy}", None)  # d=10, T=100, sigma2=1
  config.num_seeds, config.num_generations = 1000, 10
  metrics = _run(config)
  measured = np.asarray(metrics["test_error"]).mean(0)
  expected = theory.linreg_test_error(policy, np.arange(10), sigma2=1.0, dim=10, num_rows=100)
  np.testing.assert_allclose(measured, expected, rtol=0.05)
  # Replace grows without bound; accumulate stays under the pi^2/6 ceiling.
  if policy == "replace":
    assert measured[-1] > 8 * measured[0]
  elif policy == "accumulate":
    assert measured[-1] < np.pi ** 2 / 6 * 10 / 89 * 1.05


def test_subsample_is_bounded_and_above_accumulate():
  curves = {}
  for policy in ("accumulate", "accumulate_subsample", "replace"):
    config = load_config(f"linreg:{policy}", None)
    config.num_seeds, config.num_generations = 300, 10
    metrics = _run(config)
    curves[policy] = np.asarray(metrics["test_error"]).mean(0)
  assert np.all(curves["accumulate_subsample"][1:] > curves["accumulate"][1:])
  assert curves["accumulate_subsample"][-1] < 0.5 * curves["replace"][-1]


@pytest.mark.parametrize("policy", ["replace", "accumulate_subsample"])
def test_padded_dimension_fits_the_unpadded_problem(policy):
  """data.max_dim > dim (a sweep's shared program): the padded weights are exactly zero and
  the first d equal OLS on the design's first d columns."""
  config = load_config(f"linreg:{policy}", None)
  config.num_seeds, config.num_generations = 2, 2
  config.data.dim, config.data.max_dim = 3, 8
  layout = validate.policy_of(config).layout(config.num_generations)
  loop = build_loop(config, layout)
  consts, roots = loop.source.consts(), rng.seed_keys(0, config.num_seeds)
  compiled = CompiledLoop(loop, make_mesh(1), consts, roots)
  carry = compiled.init(consts, roots)
  design = np.asarray(carry.task.aux["design"])             # [S, T, max_dim]
  labels = np.asarray(carry.pool.data["y"])[:, :config.data.num_rows]
  w = np.asarray(compiled.run(consts, carry, np.arange(2))[1][1]["w"])  # [S, G, max_dim]
  assert np.all(design[:, :, 3:] == 0) and np.all(w[:, :, 3:] == 0)
  for s in range(config.num_seeds):  # generation 0 trains on the real labels
    ols = np.linalg.lstsq(design[s, :, :3], labels[s], rcond=None)[0]
    np.testing.assert_allclose(w[s, 0, :3], ols, rtol=1e-4, atol=1e-5)
