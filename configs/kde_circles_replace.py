"""Kernel density estimation on 2-D circles, policy: replace. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.kde("circles", "replace", arg)
