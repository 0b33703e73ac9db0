"""Experiment configs shared by the files in configs/.

Each file in configs/ is ``get_config(arg)`` returning one of these with its policy fixed;
``arg == "smoke"`` (big_vision's runlocal idea) shrinks the same experiment to seconds, and
the tests run exactly that.
"""
from __future__ import annotations

import os

import ml_collections


def base(policy: str) -> ml_collections.ConfigDict:
  """Fields every experiment has."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1
  c.num_generations = 10
  c.generations_per_chunk = 0      # generations per compiled scan and loop checkpoint; 0: all
  c.train_from = "scratch"         # "scratch" (Gerstgrasser) or "previous" (Bertrand)
  c.n_real = 1000                  # initial real training rows
  c.n_synth = 1000                 # synthetic rows sampled per generation (mix: lambda*n_real)
  c.policy = ml_collections.ConfigDict({"name": policy, "mix_lambda": 1.0})
  c.mesh = ml_collections.ConfigDict({"data": -1})   # devices on the data axis; -1: all
  return c


def linreg(policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """OLS on a fixed design (RESEARCH.md section 2): d=10, T=100, sigma2=1, 100 seeds."""
  c = base(policy)
  c.num_seeds = 100
  c.num_generations = 10
  c.model = ml_collections.ConfigDict({"name": "linreg"})
  c.data = ml_collections.ConfigDict(
      {"source": "linear", "dim": 10, "num_rows": 100, "sigma2": 1.0, "n_test": 1000})
  c.n_real = c.n_synth = c.data.num_rows
  if arg == "smoke":
    c.num_seeds, c.num_generations = 4, 3
  return c


def gaussian(policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """MLE of a 2-d Gaussian from 100 samples, 100 generations (Kazdan et al.)."""
  c = base(policy)
  c.num_seeds = 20
  c.num_generations = 100
  c.n_real = c.n_synth = 100
  c.model = ml_collections.ConfigDict({"name": "gaussian_mle"})
  c.data = ml_collections.ConfigDict(
      {"source": "gaussian", "dim": 2, "condition": 4.0, "n_test": 1000})
  if arg == "smoke":
    c.num_seeds, c.num_generations = 2, 3
  return c


def kde(toy: str, policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """Gaussian KDE on a 2-D toy, Scott bandwidth, NLL of 500 real test points."""
  c = base(policy)
  c.num_seeds = 5
  c.num_generations = 20
  c.n_real = c.n_synth = 500
  c.model = ml_collections.ConfigDict({"name": "kde", "bandwidth": "scott"})
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": toy, "n_test": 500})
  if arg == "smoke":
    c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 3, 64, 64
  return c


def image_data(name: str, **fields) -> ml_collections.ConfigDict:
  """An image dataset (collapse_jax/data/images.py); ``path`` from the field or ``env``."""
  d = ml_collections.ConfigDict({"source": "images", "name": name, "path": None,
                                 "resolution": None, "tfds_name": None, "limit": None,
                                 "n_test": 500})
  d.update(fields)
  return d


def mnist_path() -> str:
  """MNIST's directory (the IDX .gz files): $COLLAPSE_JAX_MNIST, else ./data/mnist."""
  return os.environ.get("COLLAPSE_JAX_MNIST", "data/mnist")


def vae(policy: str, data: ml_collections.ConfigDict, arg: str | None
        ) -> ml_collections.ConfigDict:
  """A conv VAE trained from scratch each generation (Gerstgrasser et al.'s MNIST VAE)."""
  c = base(policy)
  c.num_seeds = 1
  c.num_generations = 10
  c.generations_per_chunk = 1
  c.n_real = c.n_synth = 10000
  c.data = data
  c.model = ml_collections.ConfigDict({
      "name": "vae", "latent_dim": 16, "channels": (32, 64), "likelihood": "bernoulli",
      "temperature": 1.0, "batch_size": 128, "epochs": 5.0, "steps": 0,
      "learning_rate": 1e-3, "ema_decay": 0.999, "conv_impl": "auto"})
  if arg == "smoke":
    c.num_generations, c.n_real, c.n_synth = 2, 64, 64
    c.data.limit, c.data.n_test = 256, 64
    c.model.update({"channels": (8, 16), "epochs": 0.0, "steps": 3, "batch_size": 16})
  return c
