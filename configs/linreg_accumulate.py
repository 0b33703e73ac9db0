"""Linear regression (fixed design, OLS), policy accumulate.

The same as configs/linreg.py:accumulate, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "linreg.py:accumulate", arg)
