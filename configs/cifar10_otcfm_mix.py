"""OT flow matching on CIFAR-10 (Bertrand et al.), policy: mix, fine-tuning each generation.
Files in data.path, default $COLLAPSE_JAX_CIFAR10. Variants: ':0', ':0.5', ':1', ':inf'
(the mix lambda, default 1), ':smoke' (8x8 digits instead of CIFAR-10), combined as ':inf,smoke'."""
import os

from collapse_jax import presets


def get_config(arg=None):
  path = os.environ.get("COLLAPSE_JAX_CIFAR10", "data/cifar-10-batches-py")
  return presets.flow_images("mix", presets.image_data("cifar10", path=path), arg)
