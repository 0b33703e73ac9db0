"""OT flow matching with an MLP on 2-D moons, exact test NLL, policy: replace.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.flow_toy("moons", "replace", arg)
