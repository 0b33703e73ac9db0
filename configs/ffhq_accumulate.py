"""EDM (VP preconditioning, DDPM++ UNet, 40 Heun steps, dropout 0.05) on FFHQ 64x64 (Bertrand
et al.'s FFHQ setting), policy: accumulate, fine-tuning each generation. An image folder in
data.path, default $COLLAPSE_JAX_FFHQ, else data/ffhq. Variants: ':smoke' (resolution 8, a
tiny UNet, 2 generations; the images in $COLLAPSE_JAX_FFHQ if it is set, else scikit-learn's
8x8 digits, so it runs without files)."""
import os

from collapse_jax import presets


def get_config(arg=None):
  folder = os.environ.get("COLLAPSE_JAX_FFHQ")
  data = presets.image_data("image_folder", path=folder or "data/ffhq", resolution=64)
  smoke = presets.image_data("image_folder", path=folder, resolution=8) if folder else None
  return presets.diffusion_images("edm", "accumulate", data, arg, smoke_data=smoke,
                                  n_real=69500, sampler_steps=40, dropout=0.05)
