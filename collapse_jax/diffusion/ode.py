"""ODE integration (flow matching's sampler) and exact log-likelihoods by the instantaneous
change of variables along any process's probability-flow ODE."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp

from collapse_jax.diffusion.rows import expand, where_valid

SOLVERS = ("euler", "heun", "dopri5")

# field(t, y [b, ...], cond) -> dy/dt [b, ...]
Field = Callable[[jax.Array, jax.Array, dict], jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
  """How to integrate dy/dt = f(t, y): fixed steps (euler, heun) or adaptive dopri5."""
  name: str = "dopri5"
  steps: int = 100          # euler / heun
  rtol: float = 1e-5        # dopri5
  atol: float = 1e-5
  max_steps: int = 4096     # dopri5: a solve that needs more returns NaN

  @classmethod
  def from_config(cls, m) -> "Solver":
    """From ``model.{solver, ode_steps, rtol, atol, ode_max_steps}``; absent ones default."""
    names = {"name": "solver", "steps": "ode_steps", "rtol": "rtol", "atol": "atol",
             "max_steps": "ode_max_steps"}
    return cls(**{f: m[k] for f, k in names.items() if k in m})

  def check(self) -> str | None:
    if self.name not in SOLVERS:
      return f"Unknown ODE solver {self.name!r}; choose one of {SOLVERS}."
    if self.name != "dopri5" and self.steps < 1:
      return f"model.ode_steps must be at least 1 for the {self.name} solver, got {self.steps}."
    if self.name == "dopri5" and not (self.rtol > 0 and self.atol > 0 and self.max_steps >= 1):
      return "dopri5 needs model.rtol > 0, model.atol > 0 and model.ode_max_steps >= 1."
    return None

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


def log_likelihood(field: Field, x: jax.Array, mask: jax.Array | None, cond: dict,
                   solver: Solver, t_data: float, t_noise: float,
                   prior_std: float) -> jax.Array:
  """``[b]`` log p(x) in nats of the flow ``field`` pushing N(0, prior_std^2 I) at ``t_noise``
  to the data at ``t_data``; padded entries (mask 0) are excluded.

  Integrates from ``t_data`` to ``t_noise`` the augmented state ``(y_t, l_t)`` with
  ``dl/dt = tr(df/dy)`` (exact trace, `jax.jacfwd` per row: one network pass per number in
  a row, so small rows only) and ``l = 0`` at the data: ``log p(x) = log p_prior(y) + l``.
  """
  d = math.prod(x.shape[1:])
  row = lambda a: None if a is None else a[None]

  def trace(xi, mi, ci, t):
    f = lambda z: where_valid(field(t, z[None], jax.tree.map(row, ci)), row(mi))[0]
    return jnp.trace(jax.jacfwd(f)(xi).reshape(d, d))

  def aug(t, y):
    xt, _ = y
    return (where_valid(field(t, xt, cond), mask),
            jax.vmap(trace, in_axes=(0, 0, 0, None))(xt, mask, cond, t))

  y, l = solver.integrate(aug, (x, jnp.zeros(x.shape[0], x.dtype)), t_data, t_noise)
  axes = tuple(range(1, x.ndim))
  dims = d if mask is None else jnp.sum(
      jnp.broadcast_to(expand(mask, x), x.shape).astype(x.dtype), axes)
  return (-0.5 * jnp.sum(where_valid(y, mask) ** 2, axes) / prior_std ** 2
          - 0.5 * dims * jnp.log(2 * jnp.pi * prior_std ** 2)) + l
