"""Curation (collapse_jax/loop/curation.py): each selection rule's counts, its distribution
against closed forms (derivations in docs/curation.md), the Luce probabilities by a
chi-square test; each score; in the loop, the Gaussian's covariance shrinking by the
derived factor, determinism, and the bad values refused before anything is written. (rule
none leaving every result bitwise as it was is the golden tests' job; a resume inside a
curated generation is tests/test_segments.py's.)"""
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse_jax import experiment, validate
from collapse_jax.loop import curation

from conftest import load_config

KEY = jax.random.PRNGKey(0)


def _select(rule, scores, n, temperature=1.0, threshold=0.0, key=KEY):
  keep, extra = jax.jit(lambda s, k: curation.select(rule, s, n, k, temperature, threshold)
                        )(jnp.asarray(scores, jnp.float32), key)
  return np.asarray(keep), {k: float(v) for k, v in extra.items()}


def test_top_keeps_the_n_best_in_draw_order_ties_to_the_earlier_draw():
  keep, _ = _select("top", [0.5, 3.0, -1.0, 3.0, 2.0, 3.0], 3)
  np.testing.assert_array_equal(keep, [1, 3, 5])
  keep, _ = _select("top", [0.5, 3.0, -1.0, 3.0, 2.0, 3.0], 2)
  np.testing.assert_array_equal(keep, [1, 3])


def test_luce_keeps_one_of_each_group_and_its_frequencies_pass_a_chi_square_test():
  n, group = 20_000, np.array([0.0, 1.0, 2.0, -np.inf])  # -inf (a NaN score): never kept
  keep, _ = _select("luce", np.tile(group, n), n, temperature=1.5)
  assert keep.shape == (n,)
  np.testing.assert_array_equal(keep // 4, np.arange(n))  # one per group of K = 4
  observed = np.bincount(keep % 4, minlength=4)
  assert observed[3] == 0
  p = np.exp(group[:3] / 1.5) / np.exp(group[:3] / 1.5).sum()
  chi2 = stats.chisquare(observed[:3], n * p)
  assert chi2.pvalue > 1e-3, (observed, n * p)


def test_threshold_keeps_passing_rows_in_draw_order_then_tops_up_with_the_best():
  scores = [0.1, 5.0, 0.7, 2.0, 0.9, 0.3]
  keep, extra = _select("threshold", scores, 2, threshold=1.0)
  np.testing.assert_array_equal(keep, [1, 3])
  assert extra["curation_passed"] == pytest.approx(2 / 6)
  # Four wanted, two pass: the best two of the rest (0.9, 0.7) top the set up.
  keep, _ = _select("threshold", scores, 4, threshold=1.0)
  np.testing.assert_array_equal(keep, [1, 2, 3, 4])


# Closed forms of selection from N(0, 1) draws scored by x (docs/curation.md).
def _top_moments(k):
  """The best n of k * n draws: N(0, 1) truncated below at c = Phi^-1(1 - 1/k)."""
  c = stats.norm.ppf(1 - 1 / k)
  mean = k * stats.norm.pdf(c)
  return mean, 1 + c * mean - mean ** 2


BEST_OF_K = {2: (1 / math.sqrt(math.pi), 1 - 1 / math.pi),
             3: (1.5 / math.sqrt(math.pi), 1 + math.sqrt(3) / (2 * math.pi) - 9 / (4 * math.pi))}


@pytest.mark.parametrize("rule,k", [("top", 2), ("top", 4), ("luce", 2), ("luce", 3)])
def test_selection_from_a_normal_shifts_its_mean_and_shrinks_its_variance_as_derived(rule, k):
  n = 200_000
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(k), (k * n,)))
  # luce at temperature -> 0 is each group's best: the largest of k normals.
  keep, _ = _select(rule, x, n, temperature=1e-4)
  mean, var = _top_moments(k) if rule == "top" else BEST_OF_K[k]
  kept = x[keep]
  se = math.sqrt(var / n)
  assert abs(kept.mean() - mean) < 5 * se, (kept.mean(), mean)
  assert abs(kept.var() - var) < 5 * var * math.sqrt(2 / n) + 2e-3, (kept.var(), var)


def test_luce_at_a_high_temperature_keeps_a_uniform_draw():
  n = 100_000
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (3 * n,)))
  keep, _ = _select("luce", x, n, temperature=1e6)
  kept = x[keep]
  assert abs(kept.mean()) < 5 / math.sqrt(n) and abs(kept.var() - 1) < 0.02


def _gaussian(policy="replace", **curation_fields):
  config = load_config(f"gaussian:{policy}")
  config.num_seeds, config.num_generations, config.n_real = 2, 2, 20_000
  config.evals = {}
  config.curation.update(curation_fields)
  return config


def _metric(rows, name, generation):
  return np.array([r[name] for r in rows if r["generation"] == generation])


def test_top_by_true_density_shrinks_the_fitted_covariance_by_the_derived_factor(tmp_path):
  """Keeping the likeliest half of N(mu, Sigma) keeps z = Sigma^-1/2 (x - mu) inside the
  chi-square median ball: every direction's variance shrinks by
  k F_{chi2(d+2)}(q) with F_{chi2(d)}(q) = 1/k (docs/curation.md); mean unchanged."""
  k, d = 2, 2
  rows = experiment.train_and_evaluate(
      _gaussian(rule="top", factor=k, score="real_density"), tmp_path / "a")
  q = stats.chi2.ppf(1 / k, d)
  factor = k * stats.chi2.cdf(q, d + 2)
  ratio = _metric(rows, "trace_ratio", 1) / _metric(rows, "trace_ratio", 0)
  np.testing.assert_allclose(ratio, factor, rtol=0.04)
  assert np.all(_metric(rows, "mean_error", 1) < 1e-3)
  kept, drawn = _metric(rows, "curation_score_kept", 0), _metric(rows, "curation_score_drawn", 0)
  assert np.all(kept > drawn)
  # The same config again: bitwise the same numbers.
  again = experiment.train_and_evaluate(
      _gaussian(rule="top", factor=k, score="real_density"), tmp_path / "b")
  assert again == rows


def test_a_noisy_oracle_of_accuracy_zero_keeps_an_uncurated_distribution(tmp_path):
  rows = experiment.train_and_evaluate(
      _gaussian(rule="top", factor=2, score="noisy_oracle", accuracy=0.0), tmp_path)
  ratio = _metric(rows, "trace_ratio", 1) / _metric(rows, "trace_ratio", 0)
  np.testing.assert_allclose(ratio, 1.0, rtol=0.04)


def test_model_likelihood_scores_are_the_familys_own(tmp_path):
  """The KDE's and the Gaussian's model_likelihood is their own log density, so `top` by it
  on a fitted Gaussian shrinks as the true density does."""
  rows = experiment.train_and_evaluate(
      _gaussian(rule="top", factor=2, score="model_likelihood"), tmp_path)
  factor = 2 * stats.chi2.cdf(stats.chi2.ppf(0.5, 2), 4)
  ratio = _metric(rows, "trace_ratio", 1) / _metric(rows, "trace_ratio", 0)
  np.testing.assert_allclose(ratio, factor, rtol=0.04)


def test_the_mode_toys_true_density_is_their_mixture():
  from collapse_jax.data import toy2d
  source = toy2d.build(type("D", (), {"name": "8gaussians", "n_test": 4})())
  density = source.density()
  x = np.asarray(toy2d.eight_gaussians(KEY, 4000))
  log_p = np.asarray(density.log_density(None, {"x": jnp.asarray(x)}))
  centres, std = toy2d.MODES["8gaussians"]
  want = np.log(np.mean([stats.multivariate_normal(c, std ** 2).pdf(x) for c in centres], 0))
  np.testing.assert_allclose(log_p, want, rtol=1e-4, atol=1e-4)
  assert log_p.max() < density.upper_bound
  assert toy2d.build(type("D", (), {"name": "moons", "n_test": 4})()).density() is None


BAD = [
    ("gaussian:replace", {"rule": "best"}, "curation.rule must be one of none, top, luce"),
    ("gaussian:replace", {"rule": "top", "factor": 0}, "curation.factor must be at least 1"),
    ("gaussian:replace", {"rule": "luce", "factor": 1}, "factor must be >= 2"),
    ("gaussian:replace", {"rule": "luce", "temperature": 0.0},
     "curation.temperature must be > 0"),
    ("gaussian:replace", {"rule": "top", "score": "noisy_oracle", "accuracy": 1.5},
     "curation.accuracy must be in [0, 1]"),
    ("gaussian:replace", {"rule": "threshold", "threshold": float("nan")},
     "curation.threshold must be a finite number"),
    ("gaussian:replace", {"rule": "threshold", "score": "real_density", "threshold": 5.0},
     "No row can pass curation.threshold=5.0"),
    ("gaussian:replace", {"rule": "top", "score": "reward"}, "Unknown curation score 'reward'"),
    ("gaussian:replace", {"rule": "top", "score": "my_lab.reward"},
     "Cannot import the curation score module 'my_lab.reward'"),
    ("linreg:replace", {"rule": "top"}, "linreg model has no log-likelihood"),
    ("kde_moons:replace", {"rule": "top", "score": "real_density"},
     "toy2d source has no closed-form density"),
]


@pytest.mark.parametrize("name,fields,words", BAD, ids=[f"{n}-{f}" for n, f, _ in BAD])
def test_bad_curation_is_one_sentence_before_anything_is_written(name, fields, words, tmp_path):
  config = load_config(name)
  config.curation.update(fields)
  with pytest.raises(validate.ConfigError) as error:
    experiment.train_and_evaluate(config, tmp_path / "run")
  message = str(error.value)
  assert words in message and "\n" not in message and message.endswith("."), message
  assert not (tmp_path / "run").exists()


def test_the_classifier_score_is_a_digit_classifiers_confidence():
  from collapse_jax.data import images
  from collapse_jax.scores import classifier
  config = load_config("curation:data=digits")
  config.curation.steps = 200
  source = images.build(config.data)
  loop = type("Loop", (), {"source": source})()
  assert classifier.check(config, loop) is None
  real, labels = source.labelled_train()
  x = {"image": jnp.asarray(real[:256])}
  noise = {"image": jax.random.uniform(KEY, x["image"].shape, minval=-1, maxval=1)}
  score = classifier.build(config, loop)
  confident, unsure = (np.asarray(score(None, None, rows, KEY, None)) for rows in (x, noise))
  assert np.all((confident >= 0.1) & (confident <= 1)) and confident.mean() > 0.8
  assert confident.mean() > unsure.mean() + 0.2  # real digits over uniform noise
  config.curation.label = 3  # one class: high on threes, low on the rest
  three = np.asarray(classifier.build(config, loop)(None, None, x, KEY, None))
  assert three[labels[:256] == 3].mean() > 0.8 > 0.2 > three[labels[:256] != 3].mean()
  config.curation.label = 10
  assert "curation.label must be -1 (any class) or a class in [0, 9]" in classifier.check(
      config, loop)


def test_the_discriminator_scores_real_looking_candidates_higher():
  """Trained in the loop on the pool's real rows N(0, 1) against the candidates, it tells
  candidates drawn like the real rows from those drawn 4 standard deviations away."""
  from collapse_jax.loop.pool import DataPool, PoolLayout
  from collapse_jax.scores import discriminator
  layout = PoolLayout(n_real=512, n_fresh=0, n_synth=512, num_blocks=1)
  k_real, k_near, k_far = jax.random.split(KEY, 3)
  pool = DataPool.create({"x": jax.random.normal(k_real, (512, 2))}, layout)
  candidates = {"x": jnp.concatenate([jax.random.normal(k_near, (256, 2)),
                                      4 + jax.random.normal(k_far, (256, 2))])}
  score = discriminator.Discriminator(field="x", n_real=512, steps=300)
  s = np.asarray(jax.jit(lambda c, p: score(None, None, c, KEY, p))(candidates, pool))
  assert s[:256].mean() > s[256:].mean() + 3


def test_a_flow_is_curated_by_its_exact_likelihood_inside_the_loop(tmp_path):
  """model_likelihood of the flow and diffusion families is their probability-flow ODE's
  exact log density: the kept candidates score above the drawn ones."""
  config = load_config("toy_flow:replace")
  config.num_generations, config.evals = 1, {}
  config.curation.update({"rule": "top", "factor": 2, "score": "model_likelihood"})
  (row, *_) = experiment.train_and_evaluate(config, tmp_path)
  assert row["curation_score_kept"] > row["curation_score_drawn"]


def test_a_threshold_too_few_pass_tops_up_with_one_warning_line(tmp_path, caplog):
  config = _gaussian(rule="threshold", factor=2, score="real_density", threshold=-1.2)
  config.n_real = 2000
  with caplog.at_level(logging.WARNING):
    rows = experiment.train_and_evaluate(config, tmp_path)
  passed = _metric(rows, "curation_passed", 0)
  assert np.all(passed < 0.5)  # fewer than the n of 2n candidates passed
  warnings = [r.getMessage() for r in caplog.records if "passed curation.threshold" in
              r.getMessage()]
  assert warnings and "topped the set up" in warnings[0] and "\n" not in warnings[0]
  assert np.all(_metric(rows, "curation_score_kept", 0) > _metric(rows, "curation_score_drawn", 0))


def test_a_plug_in_score_from_outside_the_package_curates(tmp_path):
  """Top 1 of 2 by the first coordinate keeps the upper half of x0's distribution, so the
  next generation's mean moves up along x0 by 2 phi(0) = 0.80 of its standard deviation."""
  config = _gaussian(rule="top", factor=2, score="plugins.first_coordinate_score")
  config.num_generations = 2
  rows = experiment.train_and_evaluate(config, tmp_path)
  kept, drawn = _metric(rows, "curation_score_kept", 0), _metric(rows, "curation_score_drawn", 0)
  assert np.all(kept > drawn)
  assert np.all(_metric(rows, "mean_error", 1) > 100 * _metric(rows, "mean_error", 0))
