"""A multivariate Gaussian N(mu, Sigma) (Kazdan et al.'s Gaussian-fitting setting).

Per replicate: ``mu ~ N(0, I)`` and ``Sigma = Q diag(s) Q^T`` with a random rotation Q and
eigenvalues s log-uniform in [1/condition, 1] * scale, so runs test anisotropic covariances.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from collapse_jax import validate
from collapse_jax.data.source import Density, RowSpec, Task


def gaussian_log_density(x: jax.Array, mu: jax.Array, chol: jax.Array) -> jax.Array:
  """``[n]`` log N(x; mu, L L^T) for ``x [n, d]``."""
  z = jax.scipy.linalg.solve_triangular(chol, (x - mu).T, lower=True)
  log_det = 2 * jnp.sum(jnp.log(jnp.diag(chol)))
  return -0.5 * (jnp.sum(z ** 2, 0) + log_det + mu.shape[0] * jnp.log(2 * jnp.pi))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianSource:
  dim: int
  condition: float
  n_test: int
  num_train = None

  @property
  def row_spec(self) -> RowSpec:
    return RowSpec(fields={"x": ((self.dim,), "float32")}, data="x")

  def consts(self):
    return ()

  def task(self, consts, key: jax.Array) -> Task:
    km, kq, ks, kt = jax.random.split(key, 4)
    mu = jax.random.normal(km, (self.dim,))
    q, _ = jnp.linalg.qr(jax.random.normal(kq, (self.dim, self.dim)))
    s = jnp.exp(-jnp.log(self.condition) * jax.random.uniform(ks, (self.dim,)))
    cov = (q * s) @ q.T
    aux = {"mu": mu, "cov": cov, "chol": jnp.linalg.cholesky(cov)}
    return Task(test=self._draw(aux, kt, self.n_test), aux=aux)

  @staticmethod
  def _draw(aux, key, n):
    z = jax.random.normal(key, (n, aux["mu"].shape[0]))
    return {"x": aux["mu"] + z @ aux["chol"].T}

  def real(self, consts, task: Task, key: jax.Array, block: jax.Array, n: int):
    del block
    return self._draw(task.aux, key, n)

  def density(self) -> Density:
    # The peak, -(d log 2 pi + log det Sigma) / 2, is largest at the smallest eigenvalues
    # `task` can draw (1 / condition each).
    peak = 0.5 * self.dim * (math.log(self.condition) - math.log(2 * math.pi))
    return Density(lambda task, rows: gaussian_log_density(rows["x"], task.aux["mu"],
                                                           task.aux["chol"]), peak)


def build(data) -> GaussianSource:
  return GaussianSource(dim=data.dim, condition=data.condition, n_test=data.n_test)


RANGES = {
    "dim": validate.COUNT,
    # The largest over the smallest eigenvalue, so at least 1.
    "condition": validate.Range(1, note="1: isotropic"),
    "n_test": validate.COUNT,
}


def check_config(config) -> str | None:
  return validate.fields_problem(config.data, RANGES, "data.")
