"""DDPM (linear betas, 1000 steps; DDIM sampling, 100 steps; DDPM++ UNet) on CIFAR-10
(Bertrand et al.), policy mix, fine-tuning each generation.

The same as configs/cifar10.py:ddpm,mix, kept under this name for existing scripts. Variants:
':0', ':0.5', ':1', ':inf' (the mix lambda, default 1), ':smoke' (scikit-learn's 8x8 digits
instead of CIFAR-10, a tiny UNet, 2 generations), combined as ':inf,smoke'."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "cifar10.py:ddpm,mix", arg)
