"""Bertrand et al.'s CIFAR-10 retraining: a DDPM++ UNet (128 channels, attention at 16,
dropout 0.1, EMA 0.9999, Adam 2e-4, batch 128) trained 400k steps at generation 0, each later
generation fine-tuning the previous one for 391 steps (0.05 Mimg); 5 retrainings, 50,000
real images, 50,000 samples scored per generation. Files in data.path, default
$COLLAPSE_JAX_CIFAR10, else data/cifar-10-batches-py.

Variants (comma-separated): process=ddpm (default: linear betas, 1000 steps, DDIM
sampling in 100), process=edm (VP preconditioning, 18 Heun steps) or process=otcfm (OT flow
matching, dopri5 sampling); a policy (default mix, their protocol); the mix lambda
(lambda=0, 0.5, 1 the default, inf); smoke (scikit-learn's 8x8 digits instead of CIFAR-10,
a tiny UNet, 2 generations). E.g. configs/cifar10.py:process=edm,lambda=inf,smoke.
"""
import os

from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg, policy="mix", choices={"process": ("ddpm", "edm", "otcfm")})
  path = os.environ.get("COLLAPSE_JAX_CIFAR10", "data/cifar-10-batches-py")
  return presets.unet_images(v["process"] or "ddpm", presets.image_data("cifar10", path=path),
                             v["policy"], v["mix_lambda"], v["smoke"])
