"""Diffusion models: DDPM (Ho et al. 2020) with DDIM sampling, and EDM (Karras et al. 2022).

Bertrand et al.'s CIFAR-10 / FFHQ-64 retraining runs, and small MLP diffusion models on
2-D toys. Rows are ``{"image": [h, w, c]}`` in [-1, 1] (``network = "unet"``, the DDPM++
UNet) or ``{"x": [d]}`` (``network = "mlp"``, `mlp.TimeMLP`).

kind = "ddpm"  epsilon prediction under a linear beta schedule (1e-4 .. 0.02 over 1000
               steps); loss: per-example MSE on epsilon at t ~ U{0..T-1}; sampler:
               deterministic DDIM (eta = 0) on ``sampler_steps`` evenly spaced time steps
               from T-1 down to 0 (Bertrand et al.: 100).
kind = "edm"   a denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) with the
               preconditioning of EDM's Table 1, ``precond``:
                 "edm"  sigma ~ logN(P_mean, P_std), loss weight
                        lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
                 "vp"   sigma = sigma_vp(t), t ~ U(eps_t, 1), lambda = 1 / sigma^2
                        (Bertrand et al.'s EDM runs use VP preconditioning)
               sampler: EDM's deterministic Heun sampler (Algorithm 1, S_churn = 0) on the
               rho = 7 discretisation of [sigma_min, sigma_max] with ``sampler_steps``
               noise levels (CIFAR-10: 18, FFHQ-64: 40; 2 * steps - 1 network calls).

``temperature`` multiplies the sampler's initial noise (both samplers are otherwise
deterministic): 1 is unbiased, < 1 is Alemohammad et al.'s sampling bias. Samplers are
`jax.lax.scan` over time steps; sampling and evaluation run the network on chunks of at
most ``inference_batch_size`` rows (`jax.lax.map`) so 50k samples fit in memory.

``test_loss``: the training loss on held-out real data (``task.test``) averaged over five
fixed noise levels, the 10/30/50/70/90% quantiles of the training noise distribution. The
noise comes from one fixed key, not the generation's: every generation is scored on the
same noisy inputs (common random numbers), so the curve over generations shows the model
changing, not the noise draw.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Protocol

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from collapse_jax.data.source import Task
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets.mlp import TimeMLP
from collapse_jax.nets.unet import UNet

KINDS = ("ddpm", "edm")
NETWORKS = ("unet", "mlp")
PRECONDS = ("edm", "vp")
VECTOR_SOURCES = ("toy2d", "gaussian")  # rows {"x": [d]}: the MLP's data
EVAL_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
_EVAL_SEED = 2022  # PRNGKey(_EVAL_SEED) draws the test-loss noise

# net(x [b, ...], c_noise [b]) -> the raw network output F, [b, ...].
NetFn = Callable[[jax.Array, jax.Array], jax.Array]


def _per_example_mean(x: jax.Array) -> jax.Array:
  """[b, ...] -> [b]: mean over every axis but the first."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _expand(v: jax.Array, x: jax.Array) -> jax.Array:
  """Per-example [b] (or scalar) -> broadcastable against x [b, ...]."""
  v = jnp.broadcast_to(v, x.shape[:1])
  return v.reshape(v.shape + (1,) * (x.ndim - 1))


class Process(Protocol):
  """A noising process: its training noise levels, loss and sampler."""

  def noise_level(self, u: jax.Array) -> jax.Array:
    """Maps u in (0, 1) to a noise level, increasing in u; u ~ U(0, 1) is the training law."""

  def loss(self, net: NetFn, x0: jax.Array, level: jax.Array, noise: jax.Array) -> jax.Array:
    """``[b]`` weighted denoising loss of clean ``x0 [b, ...]`` at ``level [b]``."""

  def sample(self, net: NetFn, noise: jax.Array, steps: int) -> jax.Array:
    """Maps unit-variance (times temperature) ``noise [b, ...]`` to samples ``[b, ...]``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPM:
  """Ho et al.'s discrete-time process; the network predicts epsilon from (x_t, t)."""
  num_timesteps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02

  def alphas_cumprod(self) -> jax.Array:
    """``[T]`` alpha-bar_t = prod_{s <= t} (1 - beta_s), computed in float64."""
    betas = np.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=np.float64)
    return jnp.asarray(np.cumprod(1.0 - betas), jnp.float32)

  def noise_level(self, u: jax.Array) -> jax.Array:
    return jnp.minimum((u * self.num_timesteps).astype(jnp.int32), self.num_timesteps - 1)

  def loss(self, net: NetFn, x0, level, noise):
    abar = _expand(self.alphas_cumprod()[level], x0)
    xt = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise
    return _per_example_mean((net(xt, level.astype(jnp.float32)) - noise) ** 2)

  def timesteps(self, steps: int) -> np.ndarray:
    """``[steps]`` int32 time steps from T-1 down to 0, evenly spaced."""
    return np.round(np.linspace(self.num_timesteps - 1, 0, steps)).astype(np.int32)

  def sample(self, net: NetFn, noise, steps: int):
    abar = self.alphas_cumprod()
    ts = self.timesteps(steps)
    a_t = abar[ts]
    a_prev = jnp.concatenate([abar[ts[1:]], jnp.ones((1,))])  # alpha-bar_{-1} = 1: clean

    def ddim_step(x, inputs):
      t, a, a_next = inputs
      eps = net(x, jnp.full(x.shape[:1], t, jnp.float32))
      x0 = (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
      return jnp.sqrt(a_next) * x0 + jnp.sqrt(1 - a_next) * eps, None

    x, _ = jax.lax.scan(ddim_step, noise, (jnp.asarray(ts), a_t, a_prev))
    return x


@dataclasses.dataclass(frozen=True, kw_only=True)
class EDM:
  """Karras et al.'s continuous sigma process with preconditioning ``precond``."""
  precond: str = "edm"
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  # VP (Song et al.) schedule, for precond = "vp".
  beta_d: float = 19.9
  beta_min: float = 0.1
  vp_m: int = 1000
  eps_t: float = 1e-5
  # Sampler discretisation.
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  rho: float = 7.0

  def vp_sigma(self, t):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    return jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t ** 2 + self.beta_min * t))

  def vp_sigma_inv(self, sigma):
    """The t with vp_sigma(t) = sigma."""
    return (jnp.sqrt(self.beta_min ** 2 + 2 * self.beta_d * jnp.log1p(sigma ** 2))
            - self.beta_min) / self.beta_d

  def coefficients(self, sigma) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1, each shaped like ``sigma``."""
    sigma = jnp.asarray(sigma, jnp.float32)
    if self.precond == "vp":
      return (jnp.ones_like(sigma), -sigma, 1 / jnp.sqrt(sigma ** 2 + 1),
              (self.vp_m - 1) * self.vp_sigma_inv(sigma))
    sd2 = self.sigma_data ** 2
    return (sd2 / (sigma ** 2 + sd2), sigma * self.sigma_data / jnp.sqrt(sigma ** 2 + sd2),
            1 / jnp.sqrt(sigma ** 2 + sd2), jnp.log(sigma) / 4)

  def weight(self, sigma):
    """The loss weight lambda(sigma)."""
    if self.precond == "vp":
      return 1 / sigma ** 2
    return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

  def noise_level(self, u):
    if self.precond == "vp":
      return self.vp_sigma(self.eps_t + u * (1 - self.eps_t))
    return jnp.exp(self.p_mean + self.p_std * ndtri(u))

  def denoise(self, net: NetFn, x, sigma):
    """D(x; sigma) for ``x [b, ...]`` and ``sigma [b]`` or scalar."""
    c_skip, c_out, c_in, c_noise = self.coefficients(jnp.broadcast_to(sigma, x.shape[:1]))
    return _expand(c_skip, x) * x + _expand(c_out, x) * net(_expand(c_in, x) * x, c_noise)

  def loss(self, net: NetFn, x0, level, noise):
    denoised = self.denoise(net, x0 + _expand(level, x0) * noise, level)
    return self.weight(level) * _per_example_mean((denoised - x0) ** 2)

  def sigma_steps(self, steps: int) -> np.ndarray:
    """``[steps + 1]`` float32: EDM eq. 5's rho-spaced sigmas, sigma_max first, then 0."""
    lo, hi = self.sigma_min, self.sigma_max
    if self.precond == "vp":  # EDM clamps the range to what the VP network was trained on
      vp_sigma = lambda t: math.sqrt(math.expm1(0.5 * self.beta_d * t ** 2 + self.beta_min * t))
      lo, hi = max(lo, vp_sigma(self.eps_t)), min(hi, vp_sigma(1.0))
    i = np.arange(steps, dtype=np.float64)
    sig = (hi ** (1 / self.rho) + i / (steps - 1) * (lo ** (1 / self.rho) - hi ** (1 / self.rho))
           ) ** self.rho
    return np.append(sig, 0.0).astype(np.float32)

  def sample(self, net: NetFn, noise, steps: int):
    """EDM's Algorithm 1 (deterministic Heun), one network call per scan iteration.

    Call 2i evaluates D(x_i; t_i) and takes the Euler step to t_{i+1}; call 2i + 1
    evaluates D there and applies Heun's correction, giving x_{i+1}. The last step, to
    sigma = 0, is Euler only: 2 * steps - 1 calls. One call per iteration keeps a single
    copy of the network in the compiled program.
    """
    sig = self.sigma_steps(steps)
    t_cur, t_next = np.repeat(sig[:-1], 2)[:-1], np.repeat(sig[1:], 2)[:-1]
    corrector = np.tile([False, True], steps)[:-1]
    at = np.where(corrector, t_next, t_cur)  # the sigma each call evaluates D at

    def call(carry, inputs):
      x, y, d = carry  # x_i, the point evaluated now, the Euler slope at x_i
      t, t_n, s, corr = inputs
      slope = (y - self.denoise(net, y, s)) / s
      x_heun = x + (t_n - t) * 0.5 * (d + slope)
      return (jnp.where(corr, x_heun, x),
              jnp.where(corr, x_heun, x + (t_n - t) * slope),
              jnp.where(corr, d, slope)), None

    x0 = noise * sig[0]
    # The final call is the Euler step to sigma = 0: y = x + (0 - t)(x - D(x; t)) / t = D(x; t).
    (_, y, _), _ = jax.lax.scan(call, (x0, x0, jnp.zeros_like(x0)),
                                tuple(jnp.asarray(a) for a in (t_cur, t_next, at, corrector)))
    return y


def _map_rows(fn: Callable[..., jax.Array], rows: tuple[jax.Array, ...], batch: int
              ) -> jax.Array:
  """``fn`` (rows [b, ...] -> [b, ...]) over chunks of at most ``batch`` rows, with lax.map."""
  n = rows[0].shape[0]
  b = min(n, batch)
  chunks = -(-n // b)
  padded = [jnp.pad(r, [(0, chunks * b - n)] + [(0, 0)] * (r.ndim - 1)) for r in rows]
  out = jax.lax.map(lambda c: fn(*c), tuple(r.reshape((chunks, b) + r.shape[1:])
                                            for r in padded))
  return out.reshape((chunks * b,) + out.shape[2:])[:n]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Diffusion:
  """The GenerativeModel: ``process`` (DDPM or EDM) around ``net``; rows ``{field: [...]}``."""
  process: DDPM | EDM
  net: nn.Module            # UNet (images) or TimeMLP (vectors)
  field: str                # "image" or "x"
  sampler_steps: int
  temperature: float
  inference_batch_size: int
  budget: training.Budget
  initial_budget: training.Budget | None = None  # generation 0's, if longer (pretraining)

  def _apply(self, params, key: jax.Array | None = None) -> NetFn:
    """The network as a NetFn; ``key`` given: training mode (UNet dropout)."""
    def net(x, c_noise):
      if isinstance(self.net, UNet):
        return self.net.apply({"params": params}, x, c_noise, train=key is not None,
                              rngs={} if key is None else {"dropout": key})
      return self.net.apply({"params": params}, x, c_noise)
    return net

  def init(self, key, task: Task):
    x = task.test[self.field][:1]
    params = self.net.init(key, x, jnp.zeros((1,)))["params"]
    return training.init_state(params, self.budget)

  def loss(self, params, batch, key) -> jax.Array:
    """``[batch]`` denoising loss at noise levels drawn from the training law."""
    x0 = batch[self.field]
    k_level, k_noise, k_dropout = jax.random.split(key, 3)
    u = jax.random.uniform(k_level, x0.shape[:1], minval=1e-6, maxval=1 - 1e-6)
    noise = jax.random.normal(k_noise, x0.shape)
    return self.process.loss(self._apply(params, k_dropout), x0, self.process.noise_level(u),
                             noise)

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train_generation(state, view, key, self.loss, self.budget,
                                     self.initial_budget)

  def sample(self, state, task: Task, key, n: int):
    shape = task.test[self.field].shape[1:]
    net = self._apply(state["ema"])
    b = min(n, self.inference_batch_size)

    def chunk(i):
      noise = self.temperature * jax.random.normal(jax.random.fold_in(key, i), (b,) + shape)
      return self.process.sample(net, noise, self.sampler_steps)

    x = jax.lax.map(chunk, jnp.arange(-(-n // b))).reshape((-1,) + shape)[:n]
    chex.assert_shape(x, (n,) + shape)
    return {self.field: jnp.clip(x, -1, 1) if self.field == "image" else x}

  def evaluate(self, state, task: Task, key):
    del key  # common random numbers across generations: see the module docstring
    x0 = task.test[self.field]
    net = self._apply(state["ema"])
    fixed = jax.random.PRNGKey(_EVAL_SEED)

    def at_quantile(i_u):
      i, u = i_u
      noise = jax.random.normal(jax.random.fold_in(fixed, i), x0.shape)
      level = jnp.broadcast_to(self.process.noise_level(u), x0.shape[:1])
      losses = _map_rows(lambda x, z, l: self.process.loss(net, x, l, z), (x0, noise, level),
                         self.inference_batch_size)
      return jnp.mean(losses)

    quantiles = jnp.asarray(EVAL_QUANTILES, jnp.float32)
    per_level = jax.lax.map(at_quantile, (jnp.arange(len(EVAL_QUANTILES)), quantiles))
    return {"test_loss": jnp.mean(per_level)}


def _process(m) -> DDPM | EDM:
  """The kind's process, paper defaults overridden by the fields present in ``m``."""
  cls = DDPM if m.kind == "ddpm" else EDM
  return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m})


def build(config, layout) -> Diffusion:
  del layout
  m = config.model
  if m.network == "unet":
    net = UNet(base_channels=m.base_channels, channel_mult=tuple(m.channel_mult),
               num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
               dropout=m.dropout, conv_impl=m.conv_impl)
  else:
    net = TimeMLP(width=m.width, depth=m.depth)
  budget = training.Budget.from_config(m)
  return Diffusion(process=_process(m), net=net,
                   field="image" if m.network == "unet" else "x",
                   sampler_steps=m.sampler_steps, temperature=m.temperature,
                   inference_batch_size=m.inference_batch_size, budget=budget,
                   initial_budget=(dataclasses.replace(budget, steps=m.initial_steps, epochs=0.0)
                                   if m.get("initial_steps", 0) else None))


def check_config(config) -> str | None:
  m = config.model
  if m.get("kind") not in KINDS:
    return f"Unknown diffusion kind {m.get('kind')!r}; choose one of {KINDS}."
  if m.get("network") not in NETWORKS:
    return f"Unknown diffusion network {m.get('network')!r}; choose one of {NETWORKS}."
  if m.network == "unet" and config.data.source != "images":
    return "The diffusion unet network needs data.source = 'images'."
  if m.network == "mlp" and config.data.source not in VECTOR_SOURCES:
    return f"The diffusion mlp network needs data.source in {VECTOR_SOURCES}."
  if m.kind == "edm" and m.get("precond", "edm") not in PRECONDS:
    return f"Unknown EDM precond {m.get('precond')!r}; choose one of {PRECONDS}."
  min_steps = 2 if m.kind == "edm" else 1
  if m.get("sampler_steps", 0) < min_steps:
    return f"model.sampler_steps must be at least {min_steps} for {m.kind}."
  if m.kind == "ddpm" and m.sampler_steps > m.get("num_timesteps", 1000):
    return "model.sampler_steps cannot exceed model.num_timesteps for ddpm."
  if m.get("inference_batch_size", 0) < 1:
    return "model.inference_batch_size must be positive."
  if m.get("initial_steps", 0) < 0:
    return (f"model.initial_steps must be >= 0 (0: no longer first generation), got "
            f"{m.initial_steps}.")
  if m.get("initial_steps", 0) and config.train_from != "previous":
    return ("model.initial_steps (a longer generation 0 that later generations fine-tune) "
            "needs train_from = 'previous'.")
  return training.check_budget(m)
