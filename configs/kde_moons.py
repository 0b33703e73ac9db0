"""Gaussian kernel density estimation on 2-D moons, Scott's bandwidth, NLL of 500 real test
points; 500 real rows, 20 generations, 5 seeds.

Other toys are an override away (--config.data.name=circles: moons, circles, blobs,
swiss_roll, 8gaussians, checkerboard); the bandwidth takes a rule ('scott', 'silverman') or
a number (--config.model.bandwidth=0.2).

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy
mix), smoke (2 seeds, 3 generations, 64 rows). E.g. configs/kde_moons.py:replace,smoke.
"""
import ml_collections

from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations, c.n_real = 5, 20, 500
  c.model = ml_collections.ConfigDict({"name": "kde", "bandwidth": "scott"})
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": "moons", "n_test": 500})
  if v["smoke"]:
    c.num_seeds, c.num_generations, c.n_real = 2, 3, 64
  # Sample-based distances to held-out real points, mode counts, scatter figures.
  c.evals.samples2d = samples2d_eval(64 if v["smoke"] else 1000)
  return c
