"""Maximum-likelihood multivariate Gaussian: sample mean and biased (1/n) covariance.

Under ``replace`` the fitted covariance shrinks towards 0 (its determinant collapses
geometrically); under ``accumulate`` it stays bounded away from 0 (Kazdan et al.).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from collapse_jax.data.source import Task
from collapse_jax.loop.pool import TrainView


def gaussian_log_density(x: jax.Array, mu: jax.Array, chol: jax.Array) -> jax.Array:
  """``[n]`` log N(x; mu, L L^T) for ``x [n, d]``."""
  z = jax.scipy.linalg.solve_triangular(chol, (x - mu).T, lower=True)
  log_det = 2 * jnp.sum(jnp.log(jnp.diag(chol)))
  return -0.5 * (jnp.sum(z ** 2, 0) + log_det + mu.shape[0] * jnp.log(2 * jnp.pi))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianMLE:
  dim: int

  def init(self, key, task: Task):
    del key, task
    return {"mu": jnp.zeros(self.dim), "cov": jnp.eye(self.dim)}

  def fit(self, state, view: TrainView, task: Task, key):
    del state, task, key
    n = view.size().astype(jnp.float32)
    mu = view.reduce(lambda rows, c: c.astype(jnp.float32) @ rows["x"]) / n

    def scatter(rows, c):
      centred = rows["x"] - mu
      return (c.astype(jnp.float32)[:, None] * centred).T @ centred

    return {"mu": mu, "cov": view.reduce(scatter) / n}

  def sample(self, state, task: Task, key, n: int):
    z = jax.random.normal(key, (n, self.dim))
    return {"x": state["mu"] + z @ jnp.linalg.cholesky(state["cov"]).T}

  def evaluate(self, state, task: Task, key):
    del key
    mu, cov, true_cov = state["mu"], state["cov"], task.aux["cov"]
    _, log_det = jnp.linalg.slogdet(cov)
    _, true_log_det = jnp.linalg.slogdet(true_cov)
    nll = -gaussian_log_density(task.test["x"], mu, jnp.linalg.cholesky(cov)).mean()
    return {"mean_error": jnp.sum((mu - task.aux["mu"]) ** 2),
            "trace_ratio": jnp.trace(cov) / jnp.trace(true_cov),
            "log_det_ratio": log_det - true_log_det,
            "test_nll": nll}


def build(config, layout) -> GaussianMLE:
  del layout
  return GaussianMLE(dim=config.data.dim)


def check_config(config) -> str | None:
  if config.data.source != "gaussian":
    return "The gaussian_mle model needs data.source = 'gaussian'."
  if config.n_real <= config.data.dim:
    return f"A {config.data.dim}-d covariance needs n_real > dim, got n_real={config.n_real}."
  return None
