"""EDM (VP preconditioning, DDPM++ UNet, 18 Heun steps) on CIFAR-10 (Bertrand et al.), policy:
mix, fine-tuning each generation. Files in data.path, default $COLLAPSE_JAX_CIFAR10. Variants:
':0', ':0.5', ':1', ':inf' (the mix lambda, default 1), ':smoke' (scikit-learn's 8x8 digits
instead of CIFAR-10, a tiny UNet, 2 generations), combined as ':inf,smoke'."""
import os

from collapse_jax import presets


def get_config(arg=None):
  path = os.environ.get("COLLAPSE_JAX_CIFAR10", "data/cifar-10-batches-py")
  return presets.diffusion_images("edm", "mix", presets.image_data("cifar10", path=path), arg)
