"""Multivariate Gaussian by MLE, policy: accumulate_subsample. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.gaussian("accumulate_subsample", arg)
