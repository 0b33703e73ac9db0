"""Conditional flow matching (Lipman et al.; Tong et al.'s OT-CFM, as used by Bertrand et al.).

A velocity ``v(x, t)`` carries noise ``x0 ~ N(0, I)`` (t = 0) to data ``x1`` (t = 1), trained
on x_t = (1 - t) x0 + t x1 + sigma_min eps against u_t = x1 - x0 (per-example MSE, t ~ U[0,
1]). With ``ot_coupling`` a batch's noise and data are first paired by minibatch OT: pairs
drawn from a Sinkhorn plan as torchcfm's ``OTPlanSampler`` draws them. ``test_loss``: the
objective on the test set (coupled in groups of ``group`` rows) at ``eval_times`` fixed t,
with the family's fixed key. The network sees ``1000 * t`` (a step-like scale).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from collapse_jax.diffusion.ode import Solver
from collapse_jax.diffusion.rows import map_chunks, masked_mean, normal_like

TIME_SCALE = 1000.0


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[n, m]`` squared Euclidean distances between rows of ``a [n, ...]`` and ``b [m, ...]``."""
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
  return jnp.maximum(sq, 0.0)


def sinkhorn_log_plan(cost: jax.Array, eps: float | jax.Array, iters: int) -> jax.Array:
  """``[n, m]`` log of the entropic OT plan (``<P, C> - eps H(P)``, uniform marginals) of
  ``cost [n, m]``, by ``iters`` (static) log-domain Sinkhorn iterations; ``eps`` absolute.
  eps-scaling: eps decays geometrically from ``max(C)`` over the first half of the iterations
  (each stage warm-starts the next), far faster at small eps than a cold start. Column
  marginals are exact, row marginals converged.
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMatching:
  """The OT-CFM process; ``level`` is the time t in [0, 1] (0: noise, 1: data)."""
  sigma_min: float = 0.0
  ot_coupling: bool = True
  sinkhorn_eps: float = 1e-3       # relative to the mean squared cost of the batch
  sinkhorn_iters: int = 300
  group: int = 128                 # rows coupled together in test_loss (the batch size)
  eval_times: int = 8
  solver: Solver = Solver()

  def velocity(self, net, x, t, cond, key=None):
    """``[b, ...]`` velocity at ``x [b, ...]``, time ``t`` (scalar or ``[b]``) in [0, 1]."""
    return net(x, TIME_SCALE * jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]), cond, key)

  def loss(self, net, x1, t, x0, mask, cond, key):
    """``[b]`` mean squared error of v(x_t, t) against x1 - x0 (noise ``x0``)."""
    k_noise, k_drop = jax.random.split(key)
    tb = t.reshape((-1,) + (1,) * (x1.ndim - 1))
    xt = (1 - tb) * x0 + tb * x1
    if self.sigma_min:
      xt = xt + self.sigma_min * normal_like(k_noise, xt.shape, mask, xt.dtype)
    return masked_mean((self.velocity(net, xt, t, cond, k_drop) - (x1 - x0)) ** 2, mask)

  def couple(self, key, x0, rows):
    """The training pairs of noise ``x0`` and data ``rows = (x1, mask, cond)``."""
    if not self.ot_coupling:
      return x0, rows
    i, j = ot_pairs(key, x0, rows[0], self.sinkhorn_eps, self.sinkhorn_iters)
    return x0[i], jax.tree.map(lambda a: a[j], rows)

  def train_loss(self, net, x1, mask, cond, key):
    k_x0, k_ot, k_t, k_loss = jax.random.split(key, 4)
    x0 = normal_like(k_x0, x1.shape, mask, x1.dtype)
    x0, (x1, mask, cond) = self.couple(k_ot, x0, (x1, mask, cond))
    t = jax.random.uniform(k_t, x1.shape[:1], x1.dtype)
    return self.loss(net, x1, t, x0, mask, cond, k_loss)

  def test_loss(self, net, x1, mask, cond, key, chunk: int):
    n = x1.shape[0]
    k_x0, k_ot, k_loss = jax.random.split(key, 3)
    pairs = map_chunks(lambda s, r: self.couple(jax.random.fold_in(k_ot, s), *r),
                       (normal_like(k_x0, x1.shape, mask, x1.dtype), (x1, mask, cond)), n,
                       self.group)

    def loss_at(t):
      rows = lambda s, r: self.loss(net, r[1][0], jnp.full(r[0].shape[:1], t), r[0], r[1][1],
                                    r[1][2], jax.random.fold_in(k_loss, s))
      return map_chunks(rows, pairs, n, chunk)

    times = (jnp.arange(self.eval_times, dtype=jnp.float32) + 0.5) / self.eval_times
    return jnp.mean(jax.lax.map(loss_at, times))

  def sample(self, net, noise, mask, cond, key):
    del mask, key
    return self.solver.integrate(lambda t, x: self.velocity(net, x, t, cond), noise, 0.0, 1.0)

  def probability_flow(self, net):
    """``(field(t, x, cond), t_data = 1, t_noise = 0, prior std 1)``."""
    return (lambda t, x, cond: self.velocity(net, x, t, cond)), 1.0, 0.0, 1.0
