"""A 2-d Gaussian fitted by maximum likelihood from 100 samples, 100 generations, 20 seeds
(Kazdan et al.).

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy
mix), smoke (2 seeds, 3 generations). E.g. configs/gaussian.py:mix,lambda=0.5,smoke.
"""
import ml_collections

from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations, c.n_real = 20, 100, 100
  c.model = ml_collections.ConfigDict({"name": "gaussian_mle"})
  c.data = ml_collections.ConfigDict({
      "source": "gaussian",
      "dim": 2,
      "condition": 4.0,   # condition number of the true covariance
      "n_test": 1000,
  })
  if v["smoke"]:
    c.num_seeds, c.num_generations = 2, 3
  # Sample-based distances to held-out real points, mode counts, scatter figures.
  c.evals.samples2d = samples2d_eval(64 if v["smoke"] else 500)
  return c
