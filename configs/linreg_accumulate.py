"""Linear regression (fixed design, OLS), policy: accumulate. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.linreg("accumulate", arg)
