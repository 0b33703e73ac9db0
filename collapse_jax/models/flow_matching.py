"""Conditional flow matching (Lipman et al.; Tong et al.'s OT-CFM, as used by Bertrand et al.).

A velocity network ``v(x, t)`` carries noise ``x0 ~ N(0, I)`` at t = 0 to data ``x1`` at
t = 1. Training regresses it on straight paths

    x_t = (1 - t) x0 + t x1 + sigma_min * eps,     target  u_t = x1 - x0,

with a per-example mean-squared error, t ~ U[0, 1]. With ``ot_coupling`` the noise and data
of each training batch are paired by minibatch optimal transport first: an entropic plan
from log-domain Sinkhorn (fixed iterations, so it runs inside jit), from which ``batch``
index pairs are sampled as torchcfm's ``OTPlanSampler`` samples them from its exact plan.

Sampling integrates dx/dt = v from ``temperature * N(0, I)`` (temperature < 1 is
Alemohammad et al.'s sampling bias) with Euler or Heun steps (``lax.scan``) or diffrax's
adaptive Dopri5. Metrics on held-out real data:
  test_loss  the training objective on the real test set (coupled as in training, in
             groups of ``batch_size`` rows) at ``eval_times`` fixed t values, with a fixed
             key, so every generation is scored on the same noise
  test_nll   with ``exact_nll`` (2-D toys): -log p(x) of the flow whose base density is
             N(0, temperature^2 I), by the instantaneous change of variables with the exact
             Jacobian trace, in nats per example

Networks: the DDPM++ `UNet` for images (rows ``{"image": [h, w, c]}``), `TimeMLP` for 2-D
toys (rows ``{"x": [2]}``); both see the time as ``1000 * t`` (their sinusoidal embeddings
expect step-like scales).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp

from collapse_jax.data.source import Task
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets.mlp import TimeMLP
from collapse_jax.nets.unet import UNet

NETWORKS = {"images": "unet", "toy2d": "mlp"}   # data.source -> model.network
SOLVERS = ("euler", "heun", "dopri5")
TIME_SCALE = 1000.0
EVAL_SEED = 0   # the fixed key of test_loss

# velocity(x [b, ...], t scalar or [b]) -> [b, ...]
Velocity = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------
# Minibatch optimal transport.


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[n, m]`` squared Euclidean distances between rows of ``a [n, ...]`` and ``b [m, ...]``."""
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
  return jnp.maximum(sq, 0.0)


def sinkhorn_log_plan(cost: jax.Array, eps: float | jax.Array, iters: int) -> jax.Array:
  """Log of the entropic OT plan between uniform marginals, by log-domain Sinkhorn.

  Minimises ``<P, C> - eps H(P)`` over plans with row sums 1/n and column sums 1/m. The
  potentials start at eps-scaling's large end: eps decays geometrically from
  ``max(C)`` to ``eps`` over the first half of the iterations (each stage warm-starts the
  next), then stays there, which converges far faster at small eps than a cold start.

  Args:
    cost: ``[n, m]`` transport costs.
    eps: the target entropic regularisation (absolute, same units as ``cost``), > 0.
    iters: Sinkhorn iterations (each updates both potentials); static.

  Returns:
    ``[n, m]`` log P; the column marginals are exact, the row marginals converged.
  """
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
  """Indices ``(i [n], j [n])`` pairing noise ``x0 [n, ...]`` with data ``x1 [n, ...]``.

  ``n`` pairs are drawn with replacement from the Sinkhorn plan of the squared Euclidean
  cost (torchcfm's ``OTPlanSampler.sample_plan``); ``eps`` is relative to the mean cost.
  """
  cost = squared_distances(x0, x1)
  log_plan = sinkhorn_log_plan(cost, eps * jnp.mean(cost), iters).reshape(-1)
  # Inverse CDF: O(n^2) work, where categorical's Gumbel trick would draw n^3 numbers.
  cdf = jnp.cumsum(jnp.exp(log_plan - jnp.max(log_plan)))
  u = jax.random.uniform(key, (x0.shape[0],)) * cdf[-1]
  flat = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)
  return flat // x1.shape[0], flat % x1.shape[0]


# ----------------------------------------------------------------------------------------
# ODE integration and likelihood.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
  """How to integrate dy/dt = f(t, y): fixed steps (euler, heun) or adaptive dopri5."""
  name: str = "dopri5"
  steps: int = 100          # euler / heun
  rtol: float = 1e-5        # dopri5
  atol: float = 1e-5
  max_steps: int = 4096     # dopri5: a solve that needs more returns NaN

  def integrate(self, field: Callable[[jax.Array, Any], Any], y0: Any, t0: float,
                t1: float) -> Any:
    """``y(t1)`` for ``y(t0) = y0`` (any pytree); ``field(t, y)`` returns y's structure."""
    if self.name == "dopri5":
      sol = diffrax.diffeqsolve(
          diffrax.ODETerm(lambda t, y, args: field(t, y)), diffrax.Dopri5(), t0, t1, None, y0,
          stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
          saveat=diffrax.SaveAt(t1=True), max_steps=self.max_steps, throw=False)
      # A solve that ran out of steps stopped short of t1: make that visible as NaN (the
      # run then stops at the non-finite metric) rather than return a half-way state.
      ok = sol.result == diffrax.RESULTS.successful
      return jax.tree.map(lambda y: jnp.where(ok, y[-1], jnp.nan), sol.ys)
    dt = (t1 - t0) / self.steps
    axpy = lambda a, x, y: jax.tree.map(lambda xi, yi: yi + a * xi, x, y)

    def step(y, i):
      t = t0 + i * dt
      k1 = field(t, y)
      if self.name == "euler":
        return axpy(dt, k1, y), None
      k2 = field(t + dt, axpy(dt, k1, y))
      return axpy(dt / 2, jax.tree.map(jnp.add, k1, k2), y), None

    return jax.lax.scan(step, y0, jnp.arange(self.steps, dtype=jnp.float32))[0]


def log_likelihood(velocity: Velocity, x: jax.Array, solver: Solver,
                   temperature: float = 1.0) -> jax.Array:
  """``[b]`` log p(x) of the flow pushing N(0, temperature^2 I) along ``velocity``.

  Integrates from the data (t = 1) back to the noise (t = 0) the augmented state
  ``(x_t, l_t)`` with ``dl/dt = tr(dv/dx)`` (exact trace, `jax.jacfwd` per example), so
  ``log p1(x) = log p0(x_0) - int_0^1 tr(dv/dx) dt = log p0(x_0) + l_0`` with ``l_1 = 0``.

  Args:
    velocity: ``(x [b, d], t) -> [b, d]``.
    x: ``[b, d]`` points (low ``d``: the trace costs d network passes).
    solver: the integrator.
    temperature: the base density's standard deviation.
  """
  def trace(xi, t):
    return jnp.trace(jax.jacfwd(lambda z: velocity(z[None], t)[0])(xi))

  def field(t, y):
    xt, _ = y
    return velocity(xt, t), jax.vmap(trace, in_axes=(0, None))(xt, t)

  x0, l0 = solver.integrate(field, (x, jnp.zeros(x.shape[0], x.dtype)), 1.0, 0.0)
  d = x.shape[-1]
  log_p0 = (-0.5 * jnp.sum(x0 ** 2, -1) / temperature ** 2
            - 0.5 * d * jnp.log(2 * jnp.pi * temperature ** 2))
  return log_p0 + l0


def _chunked(fn: Callable[[Any], Any], xs: Any, size: int, chunk: int) -> Any:
  """``fn`` over the leading axis of ``xs`` (leaves ``[size, ...]``) in chunks, via lax.map.

  ``fn`` maps leaves ``[chunk, ...]`` to leaves ``[chunk, ...]``; the last chunk is padded
  by repeating the first rows, and the padding dropped.
  """
  chunk = max(1, min(chunk, size))
  num = -(-size // chunk)
  pad = num * chunk - size
  blocks = jax.tree.map(
      lambda x: jnp.concatenate([x, x[:pad]]).reshape((num, chunk) + x.shape[1:]), xs)
  return jax.tree.map(lambda y: y.reshape((num * chunk,) + y.shape[2:])[:size],
                      jax.lax.map(fn, blocks))


# ----------------------------------------------------------------------------------------
# The model family.


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMatching:
  network: str                       # "unet" (images) or "mlp" (2-D toys)
  net_kwargs: tuple[tuple[str, Any], ...]
  sigma_min: float
  ot_coupling: bool
  sinkhorn_eps: float                # relative to the mean squared cost of the batch
  sinkhorn_iters: int
  solver: Solver
  temperature: float
  exact_nll: bool
  eval_times: int                    # t values of test_loss
  chunk: int                         # rows per network call when sampling / evaluating
  budget: training.Budget
  initial_budget: training.Budget | None = None  # generation 0's, if longer (pretraining)

  @property
  def field(self) -> str:
    return "image" if self.network == "unet" else "x"

  @property
  def net(self):
    kwargs = dict(self.net_kwargs)
    return UNet(**kwargs) if self.network == "unet" else TimeMLP(**kwargs)

  def velocity(self, params, x: jax.Array, t: jax.Array, *, train: bool = False,
               key: jax.Array | None = None) -> jax.Array:
    """``[b, ...]`` velocity at ``x [b, ...]``, time ``t`` (scalar or ``[b]``) in [0, 1]."""
    t = TIME_SCALE * jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    if self.network == "unet":
      rngs = {"dropout": key} if train else {}
      return self.net.apply({"params": params}, x, t, train=train, rngs=rngs)
    return self.net.apply({"params": params}, x, t)

  def init(self, key, task: Task):
    x = task.test[self.field][:1]
    params = self.net.init(key, x, jnp.zeros((1,), x.dtype))["params"]
    return training.init_state(params, self.budget)

  def cfm_loss(self, params, x0: jax.Array, x1: jax.Array, t: jax.Array, key: jax.Array,
               train: bool = False) -> jax.Array:
    """``[b]`` mean squared error of v(x_t, t) against x1 - x0 (mean over dimensions)."""
    k_noise, k_drop = jax.random.split(key)
    tb = t.reshape((-1,) + (1,) * (x1.ndim - 1))
    xt = (1 - tb) * x0 + tb * x1
    if self.sigma_min:
      xt = xt + self.sigma_min * jax.random.normal(k_noise, xt.shape, xt.dtype)
    v = self.velocity(params, xt, t, train=train, key=k_drop)
    return jnp.mean((v - (x1 - x0)) ** 2, axis=tuple(range(1, x1.ndim)))

  def couple(self, key, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The training pairs of a batch of noise and data: OT-paired, or as given."""
    if not self.ot_coupling:
      return x0, x1
    i, j = ot_pairs(key, x0, x1, self.sinkhorn_eps, self.sinkhorn_iters)
    return x0[i], x1[j]

  def loss(self, params, batch, key) -> jax.Array:
    """``[batch]`` training loss: OT (or independent) coupling, t ~ U[0, 1]."""
    k_x0, k_ot, k_t, k_loss = jax.random.split(key, 4)
    x1 = batch[self.field]
    x0, x1 = self.couple(k_ot, jax.random.normal(k_x0, x1.shape, x1.dtype), x1)
    t = jax.random.uniform(k_t, x1.shape[:1], x1.dtype)
    return self.cfm_loss(params, x0, x1, t, k_loss, train=True)

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train_generation(state, view, key, self.loss, self.budget,
                                     self.initial_budget)

  def sample(self, state, task: Task, key, n: int):
    params = state["ema"]
    shape = task.test[self.field].shape[1:]

    def one_chunk(k):
      x0 = self.temperature * jax.random.normal(k, (chunk,) + shape)
      return self.solver.integrate(lambda t, x: self.velocity(params, x, t), x0, 0.0, 1.0)

    chunk = max(1, min(self.chunk, n))
    x = jax.lax.map(one_chunk, jax.random.split(key, -(-n // chunk)))
    x = x.reshape((-1,) + shape)[:n]
    return {self.field: jnp.clip(x, -1, 1) if self.network == "unet" else x}

  def evaluate(self, state, task: Task, key):
    del key  # fixed key: every generation is scored on the same noise
    params = state["ema"]
    x1 = task.test[self.field]
    n = x1.shape[0]
    k_x0, k_ot, k_loss = jax.random.split(jax.random.PRNGKey(EVAL_SEED), 3)
    # Pairs as in training: the test set coupled in groups of the training batch size.
    pairs = _chunked(lambda b: self.couple(jax.random.fold_in(k_ot, b[2][0]), b[0], b[1]),
                     (jax.random.normal(k_x0, x1.shape, x1.dtype), x1, jnp.arange(n)),
                     n, self.budget.batch_size)

    def loss_at(t):
      rows = lambda b: self.cfm_loss(params, b[0], b[1], jnp.full(b[0].shape[:1], t),
                                     jax.random.fold_in(k_loss, b[2][0]))
      return _chunked(rows, (*pairs, jnp.arange(n)), n, self.chunk)

    times = (jnp.arange(self.eval_times, dtype=jnp.float32) + 0.5) / self.eval_times
    out = {"test_loss": jnp.mean(jax.lax.map(loss_at, times))}
    if self.exact_nll:
      log_p = _chunked(
          lambda x: log_likelihood(lambda z, t: self.velocity(params, z, t), x, self.solver,
                                   self.temperature), x1, n, self.chunk)
      out["test_nll"] = -jnp.mean(log_p)
    return out


def build(config, layout) -> FlowMatching:
  del layout
  m = config.model
  budget = training.Budget.from_config(m)
  net = m.unet if m.network == "unet" else m.mlp
  net_kwargs = tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                     for k, v in sorted(net.to_dict().items()))
  return FlowMatching(
      network=m.network, net_kwargs=net_kwargs, sigma_min=m.sigma_min,
      ot_coupling=m.ot_coupling, sinkhorn_eps=m.sinkhorn_eps, sinkhorn_iters=m.sinkhorn_iters,
      solver=Solver(name=m.solver, steps=m.ode_steps, rtol=m.rtol, atol=m.atol,
                    max_steps=m.ode_max_steps),
      temperature=m.temperature, exact_nll=m.exact_nll, eval_times=m.eval_times,
      chunk=m.sample_batch_size, budget=budget,
      initial_budget=(dataclasses.replace(budget, steps=m.initial_steps, epochs=0.0)
                      if m.get("initial_steps", 0) else None))


def check_config(config) -> str | None:
  m, source = config.model, config.data.source
  if source not in NETWORKS:
    return f"The flow_matching model needs data.source in {tuple(NETWORKS)}, got {source!r}."
  if m.network != NETWORKS[source]:
    return (f"flow_matching on data.source = {source!r} needs model.network = "
            f"{NETWORKS[source]!r} (unet for images, mlp for 2-D toys), got {m.network!r}.")
  if m.network not in m:
    return f"model.network = {m.network!r} needs its settings in model.{m.network}."
  if m.solver not in SOLVERS:
    return f"Unknown ODE solver {m.solver!r}; choose one of {SOLVERS}."
  if m.solver != "dopri5" and m.ode_steps < 1:
    return f"model.ode_steps must be at least 1 for the {m.solver} solver, got {m.ode_steps}."
  if m.solver == "dopri5" and not (m.rtol > 0 and m.atol > 0 and m.ode_max_steps >= 1):
    return "dopri5 needs model.rtol > 0, model.atol > 0 and model.ode_max_steps >= 1."
  if m.exact_nll and source != "toy2d":
    return "model.exact_nll computes an exact Jacobian trace; use it on 2-D toys only."
  if m.ot_coupling and not (m.sinkhorn_eps > 0 and m.sinkhorn_iters >= 1):
    return "model.ot_coupling needs model.sinkhorn_eps > 0 and model.sinkhorn_iters >= 1."
  if not (m.temperature > 0 and m.sigma_min >= 0 and m.eval_times >= 1
          and m.sample_batch_size >= 1):
    return ("model.temperature, model.eval_times and model.sample_batch_size must be "
            "positive and model.sigma_min non-negative.")
  if m.get("initial_steps", 0) < 0:
    return f"model.initial_steps must be >= 0 (0: as later generations), got {m.initial_steps}."
  if m.get("initial_steps", 0) and config.train_from != "previous":
    return ("model.initial_steps (a longer generation 0 that later generations fine-tune) "
            "needs train_from = 'previous'.")
  return training.check_budget(m)
