"""OT flow matching with an MLP on 2-D moons, exact test NLL, policy accumulate.

The same as configs/toy_flow.py:accumulate, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "toy_flow.py:accumulate", arg)
