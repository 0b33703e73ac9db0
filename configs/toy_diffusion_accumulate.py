"""DDPM with a small MLP on 2-D 8 gaussians, trained from scratch each generation,
policy accumulate.

The same as configs/toy_diffusion.py:accumulate, kept under this name for existing scripts.
Variants: ':edm' (EDM preconditioning and Heun sampler), ':smoke', ':edm,smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "toy_diffusion.py:accumulate", arg)
