"""VAE on MNIST, policy accumulate_subsample.

The same as configs/mnist_vae.py:accumulate_subsample, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "mnist_vae.py:accumulate_subsample", arg)
