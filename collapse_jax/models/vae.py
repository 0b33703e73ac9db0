"""Variational autoencoder on images (Gerstgrasser et al. / Shumailov et al. on MNIST).

Rows hold images ``[h, w, c]`` in [-1, 1] in the source's data field. Likelihoods:
  bernoulli  targets (x + 1) / 2 in [0, 1], per-pixel sigmoid cross-entropy (the usual
             MNIST VAE)
  gaussian   N(x; decoder mean, sigma^2) with one learned log sigma
``decode`` picks what a sample is: "mean", the decoder's mean image (the usual VAE
sample), or "sample", a draw from p(x | z) itself (Bernoulli pixels mapped to {-1, 1};
mean + sigma * noise clipped to [-1, 1]), i.e. a sample of the model's full distribution.
The test loss is the negative ELBO on held-out real images, in nats per pixel (one
posterior sample, fixed key). ``temperature`` scales the prior noise at sampling time
(< 1 is Alemohammad et al.'s sampling bias).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from collapse_jax import validate
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.generative.rows import map_chunks
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets.conv_vae import Decoder, Encoder

LIKELIHOODS = ("bernoulli", "gaussian")
DECODES = ("mean", "sample")
SAMPLE_BLOCK = 1024  # prior draws decoded per block


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAE:
  field: str                         # the rows' image field
  image_shape: tuple[int, int, int]
  latent_dim: int
  channels: tuple[int, ...]
  likelihood: str
  temperature: float
  decode: str = "mean"
  budget: training.Budget
  conv_impl: str = "auto"

  @property
  def encoder(self) -> Encoder:
    return Encoder(self.latent_dim, self.channels, self.conv_impl)

  @property
  def decoder(self) -> Decoder:
    return Decoder(self.latent_dim, self.image_shape, self.channels, self.conv_impl)

  def init(self, key, task: Task):
    k_enc, k_dec = jax.random.split(key)
    x = task.test[self.field][:1]
    params = {"enc": self.encoder.init(k_enc, x)["params"],
              "dec": self.decoder.init(k_dec, jnp.zeros((1, self.latent_dim)))["params"],
              "log_sigma": jnp.zeros(())}
    return training.init_state(params, self.budget)

  def loss(self, params, batch, key) -> jax.Array:
    """``[batch]`` negative ELBO in nats per pixel."""
    x = batch[self.field]
    mean, logvar = self.encoder.apply({"params": params["enc"]}, x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    out = self.decoder.apply({"params": params["dec"]}, z)
    if self.likelihood == "bernoulli":
      nll = optax.sigmoid_binary_cross_entropy(out, (x + 1) / 2)
    else:
      log_sigma = params["log_sigma"]
      nll = 0.5 * ((x - out) / jnp.exp(log_sigma)) ** 2 + log_sigma + 0.5 * jnp.log(2 * jnp.pi)
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1 - logvar, axis=-1)
    return (jnp.sum(nll, axis=(1, 2, 3)) + kl) / x[0].size  # per pixel

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train(state, view, key, self.loss, self.budget)

  def log_likelihood(self, state, task: Task, rows, key) -> jax.Array:
    """``[n]`` one-sample ELBO of ``rows`` in nats: a lower bound on log p(x)."""
    del task
    return -self.loss(state["ema"], rows, key) * np.prod(self.image_shape)

  def sample(self, state, task: Task, key, n: int):
    k_z, k_x = jax.random.split(key)
    z = self.temperature * jax.random.normal(k_z, (n, self.latent_dim))
    # Decoded in blocks: the decoder's activations for a whole synthetic set at once (20,000
    # MNIST digits: ~4 GB) would dwarf the pool it is written to.
    out = map_chunks(lambda _, zs: self.decoder.apply({"params": state["ema"]["dec"]}, zs),
                     z, n, SAMPLE_BLOCK)
    sample = self.decode == "sample"
    if self.likelihood == "bernoulli":
      p = jax.nn.sigmoid(out)
      image = 2 * (jax.random.bernoulli(k_x, p).astype(p.dtype) if sample else p) - 1
    else:
      noise = jnp.exp(state["ema"]["log_sigma"]) * jax.random.normal(k_x, out.shape)
      image = jnp.clip(out + noise if sample else out, -1, 1)
    return {self.field: image}

  def display_sample(self, state, task: Task, key, n: int):
    """What a sample grid should show a reader: decoded means of prior draws. A draw of p(x | z)
    adds per-pixel noise that hides the digits even of a good model."""
    return dataclasses.replace(self, decode="mean").sample(state, task, key, n)

  def evaluate(self, state, task: Task, key):
    return {"test_loss": jnp.mean(self.loss(state["ema"], task.test, key))}


def build(config, layout, spec: RowSpec) -> VAE:
  del layout
  m = config.model
  return VAE(field=spec.data, image_shape=spec.shape, latent_dim=m.latent_dim,
             channels=tuple(m.channels), likelihood=m.likelihood, temperature=m.temperature,
             decode=m.decode, budget=training.Budget.from_config(m), conv_impl=m.conv_impl)


RANGES = {
    "latent_dim": validate.COUNT,
    "channels": validate.COUNT,
    "temperature": validate.POSITIVE,  # scales the prior draws z
}


def check_config(config, spec: RowSpec) -> str | None:
  if len(spec.shape) != 3 or spec.aux or spec.mask:
    return (f"The vae model needs rows of one image [height, width, channels]; this source's "
            f"rows are {spec.fields}.")
  problem = validate.fields_problem(config.model, RANGES, "model.")
  if problem:
    return problem
  if config.model.likelihood not in LIKELIHOODS:
    return f"Unknown VAE likelihood {config.model.likelihood!r}; choose one of {LIKELIHOODS}."
  if config.model.decode not in DECODES:
    return f"Unknown VAE decode {config.model.decode!r}; choose one of {DECODES}."
  return training.check_budget(config.model)
