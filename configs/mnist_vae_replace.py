"""VAE on MNIST, policy replace.

The same as configs/mnist_vae.py:replace, kept under this name for existing scripts.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "mnist_vae.py:replace", arg)
