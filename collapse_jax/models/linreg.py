"""Ordinary least squares on a fixed design: the analytic model of Gerstgrasser et al.

fit: ``w = (X^T C X)^+ X^T b`` where, per design row i, ``c_i`` counts the training rows on
design row i and ``b_i`` sums their labels: sufficient statistics summed over the pool's
blocks, so a fit never materialises the stacked design. When the view takes whole blocks
(every policy but accumulate_subsample) each design row counts k times, so
``X^T C X = k X^T X`` and the fit reuses the task's Cholesky factor: O(capacity + T d)
instead of O(capacity + T d^2 + d^3).
sample: labels ``X w + N(0, sigma2)`` for the same design (the protocol's regenerated labels).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import jax.scipy.linalg as jsl

from collapse_jax.data.linear import fixed_design_labels
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.loop.pool import TrainView

# Relative ridge on X^T C X for subsamples: changes a full-rank solution by ~1e-7 (float32
# round-off), and as it goes to 0 it gives the pseudo-inverse (minimum-norm) solution the
# reference code computes, for the rare rank-deficient subsample.
_RIDGE = 1e-7


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearRegression:
  num_rows: int

  def init(self, key, task: Task):
    del key
    return {"w": jnp.zeros(task.aux["design"].shape[1])}

  def fit(self, state, view: TrainView, task: Task, key):
    del state, key
    design, t = task.aux["design"], self.num_rows

    def per_design_row(rows, counts):
      counts = counts.astype(jnp.float32).reshape(-1, t)
      return counts.sum(0), (counts * rows["y"].reshape(-1, t)).sum(0)

    c, b = view.reduce(per_design_row)
    rhs = design.T @ b
    if view.whole_blocks:
      return {"w": jsl.cho_solve((task.aux["gram_chol"], True), rhs) / c[0]}
    gram = design.T @ (c[:, None] * design)
    active = gram.shape[0] - jnp.trace(task.aux["padding"])
    gram += _RIDGE * jnp.trace(gram) / active * jnp.eye(gram.shape[0]) + task.aux["padding"]
    return {"w": jsl.cho_solve(jsl.cho_factor(gram), rhs)}

  def sample(self, state, task: Task, key, n: int):
    return {"y": fixed_design_labels(task.aux["design"], state["w"], task.aux["sigma2"], key, n)}

  def evaluate(self, state, task: Task, key):
    del key
    residual = task.test["x"] @ state["w"] - task.test["y"]
    return {"test_error": jnp.sum((state["w"] - task.aux["w_star"]) ** 2),
            "test_mse": jnp.mean(residual ** 2)}


def build(config, layout, spec: RowSpec) -> LinearRegression:
  del layout, spec
  return LinearRegression(num_rows=config.data.num_rows)


def check_config(config, spec: RowSpec) -> str | None:
  if spec.fields != {"y": ((), "float32")}:
    return ("The linreg model needs rows of labels 'y' over a fixed design (data.source = "
            f"'linear'); this source's rows are {spec.fields}.")
  return None
