"""Linear regression (fixed design, OLS), policy replace.

The same as configs/linreg.py:replace, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "linreg.py:replace", arg)
