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
  # Image sample quality per generation (images only; 0 turns it off).
  c.metrics = ml_collections.ConfigDict(
      {"num_samples": 0, "inception_weights": None, "classifier_steps": 1500})
  return c


def linreg(policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """OLS on a fixed design (RESEARCH.md section 2): d=10, T=100, sigma2=1, 100 seeds."""
  c = base(policy)
  c.num_seeds = 100
  c.num_generations = 10
  c.model = ml_collections.ConfigDict({"name": "linreg"})
  c.data = ml_collections.ConfigDict(
      {"source": "linear", "dim": 10, "num_rows": 100, "sigma2": 1.0, "n_test": 1000,
       "max_dim": 0})  # max_dim: compiled width (0 = dim); see collapse_jax/data/linear.py
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
      "decode": "mean", "temperature": 1.0, "batch_size": 128, "epochs": 5.0, "steps": 0,
      "learning_rate": 1e-3, "ema_decay": 0.999, "conv_impl": "auto"})
  c.metrics.num_samples = 1000
  if arg == "smoke":
    c.metrics.num_samples, c.metrics.classifier_steps = 64, 20
    c.num_generations, c.n_real, c.n_synth = 2, 64, 64
    c.data.limit, c.data.n_test = 256, 64
    c.model.update({"channels": (8, 16), "epochs": 0.0, "steps": 3, "batch_size": 16})
  return c


def _flow_model(network: str, net: dict, **fields) -> ml_collections.ConfigDict:
  """config.model of flow_matching (collapse_jax/models/flow_matching.py)."""
  m = ml_collections.ConfigDict({
      "name": "flow_matching", "network": network, network: net, "sigma_min": 0.0,
      "ot_coupling": True, "sinkhorn_eps": 1e-3, "sinkhorn_iters": 300,
      "solver": "dopri5", "ode_steps": 100, "rtol": 1e-5, "atol": 1e-5,
      "ode_max_steps": 4096, "temperature": 1.0, "exact_nll": False, "eval_times": 8,
      "sample_batch_size": 500, "batch_size": 128, "steps": 0, "epochs": 0.0,
      "initial_steps": 0, "learning_rate": 2e-4, "ema_decay": 0.9999, "grad_clip": 1.0})
  m.update(fields)
  return m


def _flow_args(arg: str | None, c: ml_collections.ConfigDict) -> bool:
  """Applies a comma-separated ``arg`` of a mix lambda ("0", "0.5", "1", "inf") and/or
  "smoke" to ``c``; returns whether "smoke" was given."""
  parts = [p for p in (arg or "").split(",") if p]
  for p in parts:
    if p == "smoke":
      continue
    try:
      lam = float(p)
    except ValueError:
      raise ValueError(f"Unknown config variant {p!r}; give a mix lambda and/or 'smoke'.")
    if c.policy.name != "mix":
      raise ValueError(f"A lambda ({p}) only applies to policy 'mix', not {c.policy.name!r}.")
    c.policy.mix_lambda = lam
  return "smoke" in parts


def flow_images(policy: str, data: ml_collections.ConfigDict, arg: str | None
                ) -> ml_collections.ConfigDict:
  """OT conditional flow matching on images with Bertrand et al.'s CIFAR-10 settings.

  UNet 128 ch, mult (1, 2, 2, 2), attention at 16, dropout 0.1, EMA 0.9999, Adam 2e-4,
  batch 128, dopri5 sampling, minibatch OT coupling. Generation 0 trains 400k steps (their
  starting models are fully trained); each later one fine-tunes the previous one for
  0.05 Mimg (391 steps); 5 retrainings after generation 0, 50k samples scored. ``arg``:
  comma-separated mix lambda and/or "smoke"; smoke swaps the data for scikit-learn's 8x8
  digits (no files needed) and shrinks everything to seconds (no longer generation 0, no
  quality metrics: both cost compile or classifier-training time).
  """
  c = base(policy)
  c.train_from = "previous"
  c.num_generations = 6
  c.generations_per_chunk = 1
  c.n_real = c.n_synth = 50000
  c.data = data
  c.model = _flow_model("unet", {
      "base_channels": 128, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 2,
      "attn_resolutions": (16,), "dropout": 0.1, "conv_impl": "auto"},
      steps=391, initial_steps=400_000)
  c.metrics.num_samples = 50000
  if _flow_args(arg, c):
    c.data = image_data("digits", limit=256, n_test=64)
    c.num_generations, c.n_real, c.n_synth = 2, 64, 64
    c.metrics.num_samples = 0
    # One level (attention in the middle block only): the UNet's compile time dominates.
    c.model.unet.update({"base_channels": 8, "channel_mult": (1,), "num_res_blocks": 1,
                         "attn_resolutions": ()})
    c.model.update({"steps": 3, "initial_steps": 0, "batch_size": 16, "sinkhorn_iters": 20,
                    "eval_times": 2, "rtol": 1e-3, "atol": 1e-3, "sample_batch_size": 64})
  return c


def flow_toy(toy: str, policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """OT conditional flow matching with a small MLP on a 2-D toy; exact test NLL.

  Trained from scratch each generation (Gerstgrasser et al.'s protocol), 1000 real rows,
  Adam 1e-3, batch 256, 2000 steps, dopri5. ``arg``: mix lambda (policy mix) and/or "smoke".
  """
  c = base(policy)
  c.num_seeds = 3
  c.num_generations = 10
  c.n_real = c.n_synth = 1000
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": toy, "n_test": 500})
  c.model = _flow_model("mlp", {"width": 256, "depth": 3}, exact_nll=True, steps=2000,
                        batch_size=256, learning_rate=1e-3, ema_decay=0.999,
                        sinkhorn_eps=3e-3, sinkhorn_iters=100, sample_batch_size=1000)
  if _flow_args(arg, c):
    c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 3, 64, 64
    c.data.n_test = 64
    c.model.mlp.update({"width": 16, "depth": 1})
    c.model.update({"steps": 3, "batch_size": 16, "sinkhorn_iters": 20, "eval_times": 2,
                    "rtol": 1e-3, "atol": 1e-3})
  return c


def _diffusion_args(arg: str | None, c: ml_collections.ConfigDict) -> tuple[bool, str | None]:
  """Applies a comma-separated ``arg`` of a mix lambda ("0", "0.5", "1", "inf"), a kind
  ("ddpm", "edm") and/or "smoke" to ``c``; returns (smoke given, kind given or None)."""
  smoke, kind = False, None
  for p in (p.strip() for p in (arg or "").split(",")):
    if p == "smoke":
      smoke = True
    elif p in ("ddpm", "edm"):
      kind = p
    elif p:
      try:
        lam = float(p)
      except ValueError:
        raise ValueError(f"Unknown config variant {p!r}; give a mix lambda, 'ddpm' or "
                         "'edm', and/or 'smoke'.") from None
      if c.policy.name != "mix":
        raise ValueError(f"A lambda ({p}) only applies to policy 'mix', not {c.policy.name!r}.")
      c.policy.mix_lambda = lam
  return smoke, kind


def _diffusion_model(kind: str, network: str, **fields) -> ml_collections.ConfigDict:
  """config.model of diffusion (collapse_jax/models/diffusion.py) with the papers' defaults."""
  m = ml_collections.ConfigDict({
      "name": "diffusion", "kind": kind, "network": network,
      "sampler_steps": 100 if kind == "ddpm" else 18, "temperature": 1.0,
      "inference_batch_size": 500, "batch_size": 128, "steps": 0, "epochs": 0.0,
      "learning_rate": 2e-4, "ema_decay": 0.9999, "grad_clip": 1.0})
  if kind == "ddpm":
    m.update({"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02})
  else:
    m.update({"precond": "vp", "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2,
              "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0})
  m.update(fields)
  return m


def diffusion_images(kind: str, policy: str, data: ml_collections.ConfigDict, arg: str | None,
                     *, smoke_data: ml_collections.ConfigDict | None = None, n_real: int = 50000,
                     **model) -> ml_collections.ConfigDict:
  """DDPM (DDIM, 100 steps) or EDM (VP preconditioning, Heun, 18 steps) on images with a
  DDPM++ UNet, Bertrand et al.'s settings.

  UNet 128 ch, mult (1, 2, 2, 2), attention at 16, dropout 0.1, EMA 0.9999, Adam 2e-4,
  batch 128. Generation 0 trains 400k steps (their starting models are fully trained);
  each later one fine-tunes the previous one (weights and Adam state) for 0.05 Mimg (391
  steps); 5 retrainings after generation 0, ``n_real`` real images, n_real samples scored
  per generation. ``model`` overrides config.model fields (FFHQ: 40 steps, dropout 0.05).
  ``arg``: comma-separated mix lambda and/or "smoke"; smoke swaps the data for
  ``smoke_data`` (default scikit-learn's 8x8 digits, no files needed) and shrinks
  everything to seconds (no longer generation 0, no quality metrics: both cost compile or
  classifier-training time).
  """
  c = base(policy)
  c.train_from = "previous"
  c.num_generations = 6
  c.generations_per_chunk = 1
  c.n_real = c.n_synth = n_real
  c.data = data
  c.model = _diffusion_model(kind, "unet", base_channels=128, channel_mult=(1, 2, 2, 2),
                             num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
                             conv_impl="auto", steps=391, initial_steps=400_000)
  c.model.update(model)
  c.metrics.num_samples = n_real
  smoke, chosen = _diffusion_args(arg, c)
  if chosen:
    raise ValueError(f"This config's kind is {kind!r}; use the config of kind {chosen!r}.")
  if smoke:
    c.data = smoke_data or image_data("digits", limit=256)
    c.data.n_test = 16
    c.num_generations, c.n_real, c.n_synth = 2, 32, 32
    c.metrics.num_samples = 0  # the quality metrics train a feature classifier: slow
    c.model.update({"base_channels": 8, "channel_mult": (1,), "num_res_blocks": 1,
                    "attn_resolutions": (), "steps": 3, "initial_steps": 0, "batch_size": 16,
                    "sampler_steps": 4, "inference_batch_size": 32})
  return c


def diffusion_toy(kind: str, toy: str, policy: str, arg: str | None
                  ) -> ml_collections.ConfigDict:
  """DDPM or EDM (EDM preconditioning) with a small time-conditioned MLP on a 2-D toy.

  Trained from scratch each generation (Gerstgrasser et al.'s protocol): 1000 real rows,
  MLP width 256 x 3 residual layers, Adam 1e-3, batch 256, 3000 steps, 5 seeds, 20
  generations; DDIM 100 steps or Heun 18 steps. ``arg``: "ddpm" or "edm" (overrides
  ``kind``), a mix lambda (policy mix) and/or "smoke".
  """
  c = base(policy)
  c.num_seeds = 5
  c.num_generations = 20
  c.n_real = c.n_synth = 1000
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": toy, "n_test": 1000})
  smoke, chosen = _diffusion_args(arg, c)
  kind = chosen or kind
  # EDM preconditioning: sigma_data 1 is about the toys' per-coordinate standard deviation.
  c.model = _diffusion_model(kind, "mlp", width=256, depth=3, steps=3000, batch_size=256,
                             learning_rate=1e-3, ema_decay=0.999, inference_batch_size=1000,
                             **({} if kind == "ddpm" else {"precond": "edm", "sigma_data": 1.0}))
  if smoke:
    c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 2, 64, 64
    c.data.n_test = 64
    c.model.update({"width": 32, "depth": 1, "steps": 5, "batch_size": 32, "sampler_steps": 4})
  return c


def digits_vae(policy: str, arg: str | None) -> ml_collections.ConfigDict:
  """The quick-start: a small VAE on scikit-learn's embedded digits (no download).

  1,000 real 8x8 images, 1,000 synthetic per generation, 8 generations, each trained
  from scratch for 30 epochs of its training set (Gerstgrasser et al.'s protocol: an
  accumulating run trains longer because it has more data). Gaussian likelihood, and
  synthetic images drawn from the model's full distribution (decoder mean + learned
  noise): with mean-only samples every generation also inherits a blur bias, which
  accumulating data does not undo.
  """
  c = vae(policy, image_data("digits", n_test=359), None)
  c.num_seeds, c.num_generations = 1, 8
  c.n_real = c.n_synth = 1000
  c.metrics.num_samples = 359
  c.model.update({"channels": (32, 64), "latent_dim": 16, "epochs": 30.0, "steps": 0,
                  "batch_size": 64, "learning_rate": 2e-3, "likelihood": "gaussian",
                  "decode": "sample"})
  c.policy.mix_lambda = 0.5
  if arg == "smoke":
    c.num_generations, c.n_real, c.n_synth = 2, 64, 64
    c.metrics.num_samples, c.metrics.classifier_steps = 64, 20
    c.model.update({"channels": (8, 16), "epochs": 0.0, "steps": 3, "batch_size": 16})
  return c
