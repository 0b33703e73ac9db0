"""Kernel density estimation on 2-D swiss_roll, policy: replace. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.kde("swiss_roll", "replace", arg)
