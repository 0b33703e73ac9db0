"""Linear regression (fixed design, OLS), policy: replace. Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.linreg("replace", arg)
