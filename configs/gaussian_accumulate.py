"""Multivariate Gaussian by MLE, policy: accumulate. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.gaussian("accumulate", arg)
