"""EDM (VP preconditioning, DDPM++ UNet, 40 Heun steps, dropout 0.05) on FFHQ 64x64 (Bertrand
et al.'s FFHQ setting): configs/cifar10.py's protocol on 69,500 real images, fine-tuning each
generation. An image folder in data.path, default $COLLAPSE_JAX_FFHQ, else data/ffhq.

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy
mix), smoke (resolution 8, a tiny UNet, 2 generations; the images in $COLLAPSE_JAX_FFHQ if
it is set, else scikit-learn's 8x8 digits, so it runs without files). E.g.
configs/ffhq.py:replace,smoke. configs/ffhq_accumulate.py is the same as the default.
"""
import os

from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg)
  folder = os.environ.get("COLLAPSE_JAX_FFHQ")
  data = presets.image_data("image_folder", path=folder or "data/ffhq", resolution=64)
  smoke = presets.image_data("image_folder", path=folder, resolution=8) if folder else None
  return presets.unet_images("edm", data, v["policy"], v["mix_lambda"], v["smoke"],
                             smoke_data=smoke, n_real=69500, sampler_steps=40, dropout=0.05)
