"""Multivariate Gaussian by MLE, policy accumulate.

The same as configs/gaussian.py:accumulate, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "gaussian.py:accumulate", arg)
