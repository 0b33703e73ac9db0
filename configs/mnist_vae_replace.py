"""VAE on MNIST (IDX files in data.path, default $COLLAPSE_JAX_MNIST), policy: replace.
Variants: ':smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.vae("replace", presets.image_data("mnist", path=presets.mnist_path()), arg)
