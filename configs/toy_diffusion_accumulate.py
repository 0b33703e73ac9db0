"""DDPM with a small MLP on 2-D 8 gaussians, trained from scratch each generation, policy:
accumulate. Variants: ':edm' (EDM preconditioning and Heun sampler), ':smoke', ':edm,smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.diffusion_toy("ddpm", "8gaussians", "accumulate", arg)
