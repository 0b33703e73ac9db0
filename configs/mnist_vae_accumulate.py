"""VAE on MNIST (IDX files in data.path, default $COLLAPSE_JAX_MNIST), policy: accumulate.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.vae("accumulate", presets.image_data("mnist", path=presets.mnist_path()), arg)
