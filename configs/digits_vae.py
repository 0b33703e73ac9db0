"""The quick-start: a small conv VAE on scikit-learn's embedded 8x8 digits (no download), in
a few minutes on 2 CPU cores.

1,000 real images; 5 generations, each a fresh VAE trained for 20 epochs of its training set
(Gerstgrasser et al.'s protocol: accumulate trains longer because it holds more data), 3
seeds. Gaussian likelihood; the synthetic data are draws of the model's full distribution
(decoder mean + learned noise), so under replace each generation's noise is the next one's
data and the digits dissolve within a few generations, while accumulate keeps the real images
and stays close to generation 0. Sample grids show decoded means of prior draws (what a
reader should judge), beside the real images. Each generation trains 20 epochs of its pool:
a fixed step budget spread over accumulate's growing pool undertrained it into degrading
like replace. Channels (16, 32) suffice for 8x8 images.

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy mix,
default 0.5), smoke (64 images, a tiny VAE, 2 generations, 2 seeds). E.g.
    python launch/main.py --config=configs/digits_vae.py:replace --workdir=runs/digits_replace
    python launch/compare_policies.py --config=configs/digits_vae.py --workdir=runs/digits
"""
from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.vae(v["policy"], presets.image_data("digits", n_test=359))
  c.num_seeds, c.num_generations = 3, 5
  c.n_real = 1000  # n_synth follows
  c.policy.mix_lambda = 0.5 if v["mix_lambda"] is None else v["mix_lambda"]
  # FD / precision / recall of 359 samples (the test set's size) per generation and seed; a
  # feature classifier of 300 steps already fits the 1,438 training digits (accuracy 1.0).
  presets.image_quality(c, 359, classifier_steps=300)
  c.model.update({"channels": (16, 32), "latent_dim": 16, "epochs": 20.0, "steps": 0,
                  "batch_size": 64, "learning_rate": 2e-3, "likelihood": "gaussian",
                  "decode": "sample"})
  if v["smoke"]:
    c.num_seeds, c.num_generations, c.n_real = 2, 2, 64
    presets.image_quality(c, 64, classifier_steps=20)
    c.model.update({"channels": (8, 16), "epochs": 0.0, "steps": 3, "batch_size": 16})
  return c
