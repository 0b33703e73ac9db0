"""Builders shared by the files in configs/.

A file in configs/ is ``get_config(arg)``: one experiment's fields, readable there, and
``arg`` its variants, parsed by `variant` (collapse_jax/variants.py): a policy name,
``smoke`` (big_vision's runlocal idea: the same experiment shrunk to seconds; the tests run
exactly that) and, for policy mix, the lambda. What several experiments share lives here:
the fields every run has (`base`), image data and the image-quality evaluator, and the
neural families' model fields.
"""
from __future__ import annotations

import json
import os
import pathlib

import ml_collections
from ml_collections import config_dict

from collapse_jax import variants
from collapse_jax.loop import policies
from collapse_jax.models import training as training_lib


def variant(arg: str | None, *, policy: str = "accumulate",
            policy_names: tuple[str, ...] = policies.NAMES,
            flags: tuple[str, ...] = ("smoke",),
            choices: dict[str, tuple[str, ...]] | None = None,
            numbers: dict[str, str] | None = None) -> dict:
  """``arg``'s variants: ``{"smoke": bool, "policy": name, "mix_lambda": float or None, ...}``.

  Bare words are a policy name (default ``policy``, one of ``policy_names``) and the
  config's size switches ``flags`` ("smoke", "cpu": they exclude each other); everything
  else is ``key=value``: ``lambda=`` (the mix lambda, policy mix only), the config's own
  ``choices`` (e.g. ``{"process": ("ddpm", "edm")}``) and ``numbers`` (key -> the name it
  is returned under, e.g. ``{"temperature": "temperature"}``). Anything else is refused
  with `variants.VariantError`.
  """
  v = variants.parse(arg, flags=flags, policies=policy_names, choices=choices,
                     numbers={"lambda": "mix_lambda", **(numbers or {})})
  v["policy"] = v["policy"] or policy
  if v.get("smoke") and v.get("cpu"):
    raise variants.VariantError("Config variants smoke and cpu exclude each other.")
  if v["mix_lambda"] is not None and v["policy"] != "mix":
    raise variants.VariantError(f"A mix lambda (lambda={v['mix_lambda']:g}) only applies to "
                                f"policy mix, not {v['policy']}.")
  return v


def same_as(here: str, target: str, arg: str | None) -> ml_collections.ConfigDict:
  """``get_config`` of ``target`` (``"file.py:variants"``, a file beside ``here``, the
  calling config's ``__file__``) with ``arg``'s variants added: configs/ffhq_accumulate.py
  is configs/ffhq.py:accumulate, and configs/toy_diffusion_8gaussians.py starts from
  configs/toy_diffusion.py."""
  name, _, fixed = target.partition(":")
  return variants.load_config(pathlib.Path(here).with_name(name), fixed, arg)


def base(policy: str, mix_lambda: float | None = None) -> ml_collections.ConfigDict:
  """Fields every experiment has."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1
  c.num_generations = 10
  c.generations_per_chunk = 0      # generations per compiled scan and loop checkpoint; 0: all
  # Families trained by the shared optax loop: train a generation in segments of this many
  # steps with a checkpoint after each (0: never; -1: by model size, for long generations).
  c.checkpoint_every_steps = -1
  c.log_every_steps = 100          # training-loss curve: one point per this many steps
  # Such families sample a larger synthetic set in chunks of this many rows, each
  # checkpointed (0: never). A multiple of the device count: 10,240 = 5 * 2**11 suits every
  # power-of-two mesh, so results do not depend on it. Keys fold in the chunk index.
  c.sample_chunk_rows = 10_240
  c.train_from = "scratch"         # "scratch" (Gerstgrasser) or "previous" (Bertrand)
  c.n_real = 1000                  # initial real training rows
  # Synthetic rows sampled per generation (mix: lambda * n_real). A reference: it follows
  # n_real, also an override of it (--config.n_real=200), until it is set itself.
  c.n_synth = c.get_ref("n_real").identity()
  c.policy = ml_collections.ConfigDict(
      {"name": policy, "mix_lambda": 1.0 if mix_lambda is None else mix_lambda})
  # Curation of each generation's samples before they reach the pool (loop/curation.py):
  # rule none | top | luce | threshold, of factor x the rows, by a score (collapse_jax/
  # scores/); temperature: luce's; accuracy: the noisy_oracle score's; steps: the
  # classifier's and the discriminator's training; label: the classifier's class (-1: any).
  c.curation = ml_collections.ConfigDict(
      {"rule": "none", "factor": 4, "score": "model_likelihood", "temperature": 1.0,
       "threshold": 0.0, "accuracy": 1.0, "steps": 300, "label": -1})
  # Devices on the data axis (-1: all not on fsdp) and on the fsdp axis, over which model
  # parameters, optimizer state and EMA are sharded (parallel/mesh.py).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  # Host-side evaluators per generation: name -> {"type": module in collapse_jax/evals/, ...}.
  c.evals = ml_collections.ConfigDict()
  return c


def fill_later_fields(saved: dict, like: dict | None = None) -> dict:
  """``saved`` (a run's config.json) with the shared fields it predates added: each top-level
  field of `base` it lacks, at ``like``'s value (the config it is compared with) where that
  is the default, else at the default. A run written before a field existed ran as if the
  field had its default (curation: none), so it reads back as that run."""
  default = json.loads(base("replace").to_json())
  out = dict(saved)
  for key, value in default.items():
    if key not in out and key != "policy":
      out[key] = like[key] if like is not None and like.get(key) == value else value
  return out


def training(**fields) -> dict:
  """config.model's training fields (`collapse_jax.models.training.Budget`: batch, steps or
  epochs, optimizer, schedule, clipping, EMA, dtype; and ``initial_steps``, a longer
  generation 0 where > 0), each at its one default unless given; a neural family's model
  dict starts from these."""
  initial_steps = fields.pop("initial_steps", 0)
  return {**training_lib.budget_fields(**fields), "initial_steps": initial_steps}


def image_quality(c: ml_collections.ConfigDict, num_samples: int, classifier_steps: int = 1500
                  ) -> None:
  """Declares (or, with ``num_samples == 0``, removes) ``c.evals.quality``: FD / precision /
  recall of ``num_samples`` samples per generation, and sample grids."""
  evals = {k: v for k, v in c.evals.items() if k != "quality"}
  if num_samples:
    evals["quality"] = {"type": "image_quality", "num_samples": num_samples,
                        "inception_weights": None, "classifier_steps": classifier_steps,
                        "grid": "display"}
  c.evals = ml_collections.ConfigDict(evals)


def image_data(name: str, **fields) -> ml_collections.ConfigDict:
  """An image dataset (collapse_jax/data/images.py); ``path`` from the field or ``env``."""
  # Typed placeholders (None until given) so that --config.data.limit=100 can be parsed.
  d = ml_collections.ConfigDict({
      "source": "images", "name": name, "path": config_dict.placeholder(str),
      "resolution": config_dict.placeholder(int), "tfds_name": config_dict.placeholder(str),
      "limit": config_dict.placeholder(int), "n_test": 500})
  d.update(fields)
  return d


def mnist_path() -> str:
  """MNIST's directory (the IDX .gz files): $COLLAPSE_JAX_MNIST, else ./data/mnist."""
  return os.environ.get("COLLAPSE_JAX_MNIST", "data/mnist")


def vae(policy: str, data: ml_collections.ConfigDict, smoke: bool = False
        ) -> ml_collections.ConfigDict:
  """A conv VAE trained from scratch each generation (Gerstgrasser et al.'s MNIST VAE);
  ``smoke``: shrunk to seconds."""
  c = base(policy)
  c.num_seeds = 1
  c.num_generations = 10
  c.generations_per_chunk = 1
  c.n_real = 10000
  c.data = data
  c.model = ml_collections.ConfigDict({
      "name": "vae", "latent_dim": 16, "channels": (32, 64), "likelihood": "bernoulli",
      "decode": "mean", "temperature": 1.0, "conv_impl": "auto",
      **training(batch_size=128, epochs=5.0, learning_rate=1e-3, ema_decay=0.999)})
  image_quality(c, 1000)
  if smoke:
    image_quality(c, 64, classifier_steps=20)
    c.num_generations, c.n_real = 2, 64
    c.data.limit, c.data.n_test = 256, 64
    c.model.update({"channels": (8, 16), "epochs": 0.0, "steps": 3, "batch_size": 16})
  return c


def flow_model(network: str, net: dict, **fields) -> ml_collections.ConfigDict:
  """config.model of flow_matching (collapse_jax/models/flow_matching.py); the network's
  settings in ``model.<network>``."""
  m = ml_collections.ConfigDict({
      "name": "flow_matching", "network": network, network: net, "sigma_min": 0.0,
      "ot_coupling": True, "sinkhorn_eps": 1e-3, "sinkhorn_iters": 300,
      "solver": "dopri5", "ode_steps": 100, "rtol": 1e-5, "atol": 1e-5,
      "ode_max_steps": 4096, "temperature": 1.0, "exact_nll": False, "eval_times": 8,
      "inference_batch_size": 500, "eval_seed": 0,
      **training(batch_size=128, learning_rate=2e-4, ema_decay=0.9999)})
  m.update(fields)
  return m


def diffusion_model(kind: str, network: str, net: dict, **fields) -> ml_collections.ConfigDict:
  """config.model of diffusion (collapse_jax/models/diffusion.py), DDPM or EDM with the
  papers' defaults; the network's settings in ``model.<network>``."""
  m = ml_collections.ConfigDict({
      "name": "diffusion", "kind": kind, "network": network, network: net,
      "sampler_steps": 100 if kind == "ddpm" else 18, "temperature": 1.0, "exact_nll": False,
      "inference_batch_size": 500, "eval_seed": 2022,
      **training(batch_size=128, learning_rate=2e-4, ema_decay=0.9999)})
  if kind == "ddpm":
    m.update({"num_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4,
              "beta_end": 0.02})
  else:
    m.update({"precond": "vp", "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2,
              "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0})
  m.update(fields)
  return m


def unet_images(process: str, data: ml_collections.ConfigDict, policy: str,
                mix_lambda: float | None = None, smoke: bool = False, *,
                smoke_data: ml_collections.ConfigDict | None = None, n_real: int = 50000,
                **model) -> ml_collections.ConfigDict:
  """Bertrand et al.'s image retraining (configs/cifar10.py, configs/ffhq.py): ``process``
  "ddpm" (DDIM, 100 steps), "edm" (VP preconditioning, Heun, 18 steps) or "otcfm" (OT flow
  matching, dopri5) with a DDPM++ UNet.

  UNet 128 ch, mult (1, 2, 2, 2), attention at 16, dropout 0.1, EMA 0.9999, Adam 2e-4,
  batch 128. Generation 0 trains 400k steps (their starting models are fully trained);
  each later one fine-tunes the previous one (weights and Adam state) for 0.05 Mimg (391
  steps); 5 retrainings after generation 0, ``n_real`` real images, n_real samples scored
  per generation. ``model`` overrides config.model fields or UNet settings (FFHQ: 40
  steps, dropout 0.05). ``smoke`` swaps the data for ``smoke_data`` (default scikit-learn's
  8x8 digits, no files needed) and shrinks everything to seconds (no longer generation 0,
  no quality metrics: both cost compile or classifier-training time).
  """
  c = base(policy, mix_lambda)
  c.train_from = "previous"
  c.num_generations = 6
  c.generations_per_chunk = 1
  c.n_real = c.n_synth = n_real
  c.data = data
  unet = {"base_channels": 128, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 2,
          "attn_resolutions": (16,), "dropout": 0.1, "conv_impl": "auto"}
  flow = process == "otcfm"
  c.model = (flow_model("unet", unet, steps=391, initial_steps=400_000) if flow else
             diffusion_model(process, "unet", unet, steps=391, initial_steps=400_000))
  for k, v in model.items():
    (c.model.unet if k in c.model.unet else c.model)[k] = v
  image_quality(c, n_real)
  if smoke:
    c.data = smoke_data or image_data("digits", limit=256)
    c.data.n_test = 64 if flow else 16
    c.num_generations = 2
    c.n_real = c.n_synth = 64 if flow else 32
    image_quality(c, 0)
    # One level (attention in the middle block only): the UNet's compile time dominates.
    c.model.unet.update({"base_channels": 8, "channel_mult": (1,), "num_res_blocks": 1,
                         "attn_resolutions": ()})
    c.model.update({"steps": 3, "initial_steps": 0, "batch_size": 16,
                    "inference_batch_size": 64 if flow else 32})
    c.model.update({"sinkhorn_iters": 20, "eval_times": 2, "rtol": 1e-3, "atol": 1e-3}
                   if flow else {"sampler_steps": 4})
  return c
