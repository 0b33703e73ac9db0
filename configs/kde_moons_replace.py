"""Kernel density estimation on 2-D moons, policy replace.

The same as configs/kde_moons.py:replace, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "kde_moons.py:replace", arg)
