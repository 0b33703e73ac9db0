"""Maximum-likelihood multivariate Gaussian: sample mean and biased (1/n) covariance.

Under ``replace`` the fitted covariance shrinks towards 0 (its determinant collapses
geometrically); under ``accumulate`` it stays bounded away from 0 (Kazdan et al.).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from collapse_jax.data.gaussian import gaussian_log_density
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.loop.pool import TrainView


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianMLE:
  field: str   # the rows' vector field, [dim] per row
  dim: int

  def init(self, key, task: Task):
    del key, task
    return {"mu": jnp.zeros(self.dim), "cov": jnp.eye(self.dim)}

  def fit(self, state, view: TrainView, task: Task, key):
    del state, task, key
    n = view.size().astype(jnp.float32)
    mu = view.reduce(lambda rows, c: c.astype(jnp.float32) @ rows[self.field]) / n

    def scatter(rows, c):
      centred = rows[self.field] - mu
      return (c.astype(jnp.float32)[:, None] * centred).T @ centred

    return {"mu": mu, "cov": view.reduce(scatter) / n}

  def sample(self, state, task: Task, key, n: int):
    z = jax.random.normal(key, (n, self.dim))
    return {self.field: state["mu"] + z @ jnp.linalg.cholesky(state["cov"]).T}

  def log_likelihood(self, state, task: Task, rows, key=None) -> jax.Array:
    """``[n]`` log density of ``rows`` under the fitted Gaussian."""
    del task, key
    return gaussian_log_density(rows[self.field], state["mu"], jnp.linalg.cholesky(state["cov"]))

  def evaluate(self, state, task: Task, key):
    del key
    mu, cov = state["mu"], state["cov"]
    nll = -self.log_likelihood(state, task, task.test).mean()
    if "cov" not in task.aux:  # a source without a true Gaussian (a 2-D toy): NLL only
      return {"test_nll": nll}
    true_cov = task.aux["cov"]
    _, log_det = jnp.linalg.slogdet(cov)
    _, true_log_det = jnp.linalg.slogdet(true_cov)
    return {"mean_error": jnp.sum((mu - task.aux["mu"]) ** 2),
            "trace_ratio": jnp.trace(cov) / jnp.trace(true_cov),
            "log_det_ratio": log_det - true_log_det,
            "test_nll": nll}


def build(config, layout, spec: RowSpec) -> GaussianMLE:
  del layout
  return GaussianMLE(field=spec.data, dim=spec.shape[0])


def check_config(config, spec: RowSpec) -> str | None:
  if len(spec.shape) != 1 or spec.aux or spec.mask:
    return (f"The gaussian_mle model needs rows of one vector [dim]; this source's rows are "
            f"{spec.fields}.")
  dim = spec.shape[0]
  if config.n_real <= dim:
    return f"A {dim}-d covariance needs n_real > dim, got n_real={config.n_real}."
  return None
