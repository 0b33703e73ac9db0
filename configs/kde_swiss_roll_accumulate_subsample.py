"""Kernel density estimation on 2-D swiss_roll, policy: accumulate_subsample. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.kde("swiss_roll", "accumulate_subsample", arg)
