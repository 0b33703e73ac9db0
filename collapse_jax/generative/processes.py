"""The processes: DDPM (Ho et al. 2020; DDIM sampler), EDM (Karras et al. 2022; EDM Table 1's
"edm" or "vp" preconditioning, Heun sampler) and OT conditional flow matching (Lipman et al.,
Tong et al.: noise and data paired by draws from a minibatch Sinkhorn plan, as torchcfm's
``OTPlanSampler`` draws them), with Bertrand et al.'s settings. DDPM / EDM test losses average
five fixed noise levels (the 10..90% quantiles of the training law); their probability flow
is dy/dlog(sigma) = sigma eps(y; sigma) for y = x / sqrt(alpha-bar) (EDM: y = x)."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from collapse_jax.generative.family import Solver
from collapse_jax.generative.rows import expand, map_chunks, masked_mean, normal_like

EVAL_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
TIME_SCALE = 1000.0  # flow matching's network sees 1000 t


class ScoreProcess:
  """What DDPM and EDM share: the training draw, the test loss, the probability flow."""

  def train_loss(self, net, x, mask, cond, key):
    k_level, k_noise, k_dropout = jax.random.split(key, 3)
    u = jax.random.uniform(k_level, x.shape[:1], minval=1e-6, maxval=1 - 1e-6)
    return self.loss(net, x, self.noise_level(u), normal_like(k_noise, x.shape, mask), mask,
                     cond, k_dropout)

  def test_loss(self, net, x, mask, cond, key, chunk: int):
    def at_quantile(i_u):
      i, u = i_u
      noise = normal_like(jax.random.fold_in(key, i), x.shape, mask)
      level = jnp.broadcast_to(self.noise_level(u), x.shape[:1])
      return jnp.mean(map_chunks(lambda _, r: self.loss(net, *r, None),
                                 (x, level, noise, mask, cond), x.shape[0], chunk))

    quantiles = jnp.asarray(EVAL_QUANTILES, jnp.float32)
    return jnp.mean(jax.lax.map(at_quantile, (jnp.arange(len(EVAL_QUANTILES)), quantiles)))

  def probability_flow(self, net):
    """``(field(log sigma, y, cond), log sigma_lo, log sigma_hi, prior std)``."""
    lo, hi = self.sigma_range()
    field = lambda s, y, cond: jnp.exp(s) * self.eps(net, y, jnp.exp(s), cond)
    return field, math.log(lo), math.log(hi), self.prior_std()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPM(ScoreProcess):
  """Ho et al.'s discrete-time process; the network predicts epsilon from (x_t, t)."""
  num_timesteps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02
  beta_schedule: str = "linear"   # or "sigmoid": GeoDiff's sigmoid(linspace(-6, 6)) ramp
  sampler_steps: int = 100
  eta: float = 0.0                # DDIM's eta: 0 deterministic, 1 ancestral (DDPM)

  def betas(self) -> np.ndarray:
    """``[T]`` float64 betas."""
    if self.beta_schedule == "sigmoid":
      ramp = 1 / (1 + np.exp(-np.linspace(-6, 6, self.num_timesteps, dtype=np.float64)))
      return ramp * (self.beta_end - self.beta_start) + self.beta_start
    return np.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=np.float64)

  def alphas_cumprod(self) -> jax.Array:
    """``[T]`` alpha-bar_t = prod_{s <= t} (1 - beta_s), computed in float64."""
    return jnp.asarray(np.cumprod(1.0 - self.betas()), jnp.float32)

  def log_sigmas(self) -> np.ndarray:
    """``[T]`` float64 log sigma_t, sigma_t^2 = (1 - alpha-bar_t) / alpha-bar_t."""
    abar = np.cumprod(1.0 - self.betas())
    return 0.5 * np.log((1 - abar) / abar)

  def noise_level(self, u):
    return jnp.minimum((u * self.num_timesteps).astype(jnp.int32), self.num_timesteps - 1)

  def loss(self, net, x0, level, noise, mask, cond, key):
    abar = expand(self.alphas_cumprod()[level], x0)
    xt = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise
    return masked_mean((net(xt, level.astype(jnp.float32), cond, key) - noise) ** 2, mask)

  def timesteps(self, steps: int) -> np.ndarray:
    """``[steps]`` int32 time steps from T-1 down to 0, evenly spaced."""
    return np.round(np.linspace(self.num_timesteps - 1, 0, steps)).astype(np.int32)

  def sample(self, net, noise, mask, cond, key):
    abar = self.alphas_cumprod()
    ts = self.timesteps(self.sampler_steps)
    a_prev = jnp.concatenate([abar[ts[1:]], jnp.ones((1,))])  # alpha-bar_{-1} = 1: clean
    keys = jax.random.split(key, len(ts)) if self.eta else jnp.zeros(len(ts))

    def ddim_step(x, inputs):
      t, a, a_next, k = inputs
      eps = net(x, jnp.full(x.shape[:1], t, jnp.float32), cond, None)
      x0 = (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
      if not self.eta:
        return jnp.sqrt(a_next) * x0 + jnp.sqrt(1 - a_next) * eps, None
      var = self.eta ** 2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
      return (jnp.sqrt(a_next) * x0 + jnp.sqrt(1 - a_next - var) * eps
              + jnp.sqrt(var) * normal_like(k, x.shape, mask)), None

    return jax.lax.scan(ddim_step, noise, (jnp.asarray(ts), abar[ts], a_prev, keys))[0]

  def sigma_range(self) -> tuple[float, float]:
    return math.exp(self.log_sigmas()[0]), math.exp(self.log_sigmas()[-1])

  def prior_std(self) -> float:  # the sampler's x_{T-1} ~ N(0, I) as y = x / sqrt(alpha-bar)
    return math.sqrt(1 + self.sigma_range()[1] ** 2)

  def eps(self, net, y, sigma, cond):
    sigma = jnp.broadcast_to(sigma, y.shape[:1])
    t = jnp.interp(jnp.log(sigma), jnp.asarray(self.log_sigmas(), jnp.float32),
                   jnp.arange(self.num_timesteps, dtype=jnp.float32))
    return net(y / expand(jnp.sqrt(1 + sigma ** 2), y), t, cond, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EDM(ScoreProcess):
  """Karras et al.'s continuous sigma process with preconditioning ``precond``."""
  precond: str = "edm"
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  beta_d: float = 19.9            # VP (Song et al.) schedule, for precond = "vp"
  beta_min: float = 0.1
  vp_m: int = 1000
  eps_t: float = 1e-5
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  rho: float = 7.0
  sampler_steps: int = 18         # Heun steps (CIFAR-10: 18, FFHQ-64: 40)

  def vp_sigma(self, t, xp=jnp):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1); ``xp``: jnp, or math for floats."""
    return xp.sqrt(xp.expm1(0.5 * self.beta_d * t ** 2 + self.beta_min * t))

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

  def denoise(self, net, x, sigma, cond, key=None):
    """D(x; sigma) for ``x [b, ...]`` and ``sigma [b]`` or scalar."""
    c_skip, c_out, c_in, c_noise = self.coefficients(jnp.broadcast_to(sigma, x.shape[:1]))
    return expand(c_skip, x) * x + expand(c_out, x) * net(expand(c_in, x) * x, c_noise, cond, key)

  def loss(self, net, x0, level, noise, mask, cond, key):
    denoised = self.denoise(net, x0 + expand(level, x0) * noise, level, cond, key)
    return self.weight(level) * masked_mean((denoised - x0) ** 2, mask)

  def sigma_range(self) -> tuple[float, float]:
    if self.precond == "vp":  # EDM clamps the range to what the VP network was trained on
      return (max(self.sigma_min, self.vp_sigma(self.eps_t, math)),
              min(self.sigma_max, self.vp_sigma(1.0, math)))
    return self.sigma_min, self.sigma_max

  def prior_std(self) -> float:
    return self.sigma_range()[1]

  def eps(self, net, y, sigma, cond):
    return (y - self.denoise(net, y, sigma, cond)) / sigma

  def sigma_steps(self, steps: int) -> np.ndarray:
    """``[steps + 1]`` float32: EDM eq. 5's rho-spaced sigmas, sigma_max first, then 0."""
    lo, hi = self.sigma_range()
    first, last = hi ** (1 / self.rho), lo ** (1 / self.rho)
    sig = (first + np.arange(steps, dtype=np.float64) / (steps - 1) * (last - first)) ** self.rho
    return np.append(sig, 0.0).astype(np.float32)

  def sample(self, net, noise, mask, cond, key):
    """Deterministic Heun, one network call per scan iteration (one copy of the network in
    the program): call 2i is D(x_i; t_i) and the Euler step to t_{i+1}, call 2i + 1 Heun's
    correction there; the last step, to sigma = 0, is Euler only (2 * steps - 1 calls)."""
    del mask, key  # deterministic; the network's output is already 0 on padding
    sig = self.sigma_steps(self.sampler_steps)
    t_cur, t_next = np.repeat(sig[:-1], 2)[:-1], np.repeat(sig[1:], 2)[:-1]
    corrector = np.tile([False, True], self.sampler_steps)[:-1]
    at = np.where(corrector, t_next, t_cur)  # the sigma each call evaluates D at

    def call(carry, inputs):
      x, y, d = carry  # x_i, the point evaluated now, the Euler slope at x_i
      t, t_n, s, corr = inputs
      slope = self.eps(net, y, s, cond)
      x_heun = x + (t_n - t) * 0.5 * (d + slope)
      return (jnp.where(corr, x_heun, x),
              jnp.where(corr, x_heun, x + (t_n - t) * slope),
              jnp.where(corr, d, slope)), None

    x0 = noise * sig[0]
    # The final call is the Euler step to sigma = 0: y = x + (0 - t)(x - D(x; t)) / t = D(x; t).
    (_, y, _), _ = jax.lax.scan(call, (x0, x0, jnp.zeros_like(x0)),
                                tuple(jnp.asarray(a) for a in (t_cur, t_next, at, corrector)))
    return y


def sinkhorn_log_plan(cost: jax.Array, eps: float | jax.Array, iters: int) -> jax.Array:
  """``[n, m]`` log of the entropic OT plan of ``cost`` (uniform marginals, absolute ``eps``)
  by ``iters`` log-domain Sinkhorn iterations; eps decays geometrically from max(cost) over
  the first half (eps-scaling: far faster at small eps than a cold start)."""
  n, m = cost.shape
  log_a, log_b = -math.log(n), -math.log(m)
  eps = jnp.asarray(eps, cost.dtype)
  start = jnp.maximum(jnp.max(cost), eps)
  anneal = max(iters // 2, 1)
  ratio = (eps / start) ** (1.0 / anneal)

  def update(k, fg):
    f, g = fg
    e = jnp.maximum(start * ratio ** k, eps)
    f = e * log_a - e * jax.nn.logsumexp((g[None, :] - cost) / e, axis=1)
    g = e * log_b - e * jax.nn.logsumexp((f[:, None] - cost) / e, axis=0)
    return f, g

  f, g = jax.lax.fori_loop(0, iters, update, (jnp.zeros(n, cost.dtype), jnp.zeros(m, cost.dtype)))
  return (f[:, None] + g[None, :] - cost) / eps


def ot_pairs(key: jax.Array, x0: jax.Array, x1: jax.Array, eps: float,
             iters: int) -> tuple[jax.Array, jax.Array]:
  """Indices ``(i [n], j [n])`` pairing noise ``x0 [n, ...]`` with data ``x1 [n, ...]``, drawn
  from the Sinkhorn plan of their squared distances (``eps`` relative to the mean one)."""
  a, b = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
  cost = jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T, 0.0)
  log_plan = sinkhorn_log_plan(cost, eps * jnp.mean(cost), iters).reshape(-1)
  # Inverse CDF: O(n^2) work, where categorical's Gumbel trick would draw n^3 numbers.
  cdf = jnp.cumsum(jnp.exp(log_plan - jnp.max(log_plan)))
  u = jax.random.uniform(key, (x0.shape[0],)) * cdf[-1]
  flat = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)
  return flat // x1.shape[0], flat % x1.shape[0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMatching:
  """OT-CFM: v(x_t, t) ~ x1 - x0 at x_t = (1 - t) x0 + t x1 + sigma_min eps, t ~ U[0, 1]."""
  sigma_min: float = 0.0
  ot_coupling: bool = True
  sinkhorn_eps: float = 1e-3       # relative to the mean squared cost of the batch
  sinkhorn_iters: int = 300
  group: int = 128                 # test rows coupled together (the batch size)
  eval_times: int = 8              # test_loss: the objective at this many fixed t
  solver: Solver = Solver()

  def velocity(self, net, x, t, cond, key=None):
    """``[b, ...]`` velocity at ``x [b, ...]``, time ``t`` (scalar or ``[b]``) in [0, 1]."""
    return net(x, TIME_SCALE * jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]), cond, key)

  def loss(self, net, t, x0, rows, key):
    """``[b]`` squared error of v(x_t, t) against x1 - x0; ``rows = (x1, mask, cond)``."""
    x1, mask, cond = rows
    k_noise, k_drop = jax.random.split(key)
    xt = (1 - expand(t, x1)) * x0 + expand(t, x1) * x1
    if self.sigma_min:
      xt = xt + self.sigma_min * normal_like(k_noise, xt.shape, mask, xt.dtype)
    return masked_mean((self.velocity(net, xt, t, cond, k_drop) - (x1 - x0)) ** 2, mask)

  def couple(self, key, x0, rows):
    """The training pairs ``(x0, rows)`` of noise ``x0`` and ``rows = (x1, mask, cond)``."""
    if not self.ot_coupling:
      return x0, rows
    i, j = ot_pairs(key, x0, rows[0], self.sinkhorn_eps, self.sinkhorn_iters)
    return x0[i], jax.tree.map(lambda a: a[j], rows)

  def train_loss(self, net, x1, mask, cond, key):
    k_x0, k_ot, k_t, k_loss = jax.random.split(key, 4)
    x0 = normal_like(k_x0, x1.shape, mask, x1.dtype)
    t = jax.random.uniform(k_t, x1.shape[:1], x1.dtype)
    return self.loss(net, t, *self.couple(k_ot, x0, (x1, mask, cond)), k_loss)

  def test_loss(self, net, x1, mask, cond, key, chunk: int):
    n = x1.shape[0]
    k_x0, k_ot, k_loss = jax.random.split(key, 3)
    x0 = normal_like(k_x0, x1.shape, mask, x1.dtype)
    pairs = map_chunks(lambda s, r: self.couple(jax.random.fold_in(k_ot, s), *r),
                       (x0, (x1, mask, cond)), n, self.group)
    loss_at = lambda t: map_chunks(
        lambda s, r: self.loss(net, jnp.full(r[0].shape[:1], t), *r,
                               jax.random.fold_in(k_loss, s)), pairs, n, chunk)
    times = (jnp.arange(self.eval_times, dtype=jnp.float32) + 0.5) / self.eval_times
    return jnp.mean(jax.lax.map(loss_at, times))

  def sample(self, net, noise, mask, cond, key):
    del mask, key
    return self.solver.integrate(lambda t, x: self.velocity(net, x, t, cond), noise, 0.0, 1.0)

  def probability_flow(self, net):
    """``(field(t, x, cond), t_data = 1, t_noise = 0, prior std 1)``."""
    return (lambda t, x, cond: self.velocity(net, x, t, cond)), 1.0, 0.0, 1.0
