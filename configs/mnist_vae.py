"""A conv VAE on MNIST, trained from scratch each generation (Gerstgrasser et al.): 10,000
real images, 10 generations, image-quality metrics of 1,000 samples. The IDX .gz files in
data.path, default $COLLAPSE_JAX_MNIST, else data/mnist.

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy
mix), smoke (256 images, a tiny VAE, 2 generations). E.g. configs/mnist_vae.py:replace,smoke.
"""
from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.vae(v["policy"], presets.image_data("mnist", path=presets.mnist_path()),
                  smoke=v["smoke"])
  if v["mix_lambda"] is not None:
    c.policy.mix_lambda = v["mix_lambda"]
  return c
