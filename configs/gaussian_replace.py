"""Multivariate Gaussian by MLE, policy replace.

The same as configs/gaussian.py:replace, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "gaussian.py:replace", arg)
