"""Multivariate Gaussian by MLE, policy: replace. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.gaussian("replace", arg)
