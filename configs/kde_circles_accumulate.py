"""Kernel density estimation on 2-D circles, policy: accumulate. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.kde("circles", "accumulate", arg)
