"""OT flow matching with an MLP on 2-D moons, exact test NLL, policy replace.

The same as configs/toy_flow.py:replace, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "toy_flow.py:replace", arg)
