"""Linear regression with a fixed Gaussian design (Gerstgrasser et al., section 2).

Per replicate: a design ``X [T, d]`` with i.i.d. N(0, 1) entries, drawn once and reused by
every generation; true weights ``w* ~ N(0, I_d)``; labels ``y = X w* + N(0, sigma2)``.
A training row is just its label ``{"y": []}``: row i of any block is design row i mod T,
so the pool never stores the design (100 seeds x 101 blocks x 1000 x 100 floats would not fit).
The test set is ``n_test`` noiseless points with isotropic inputs.

sigma2 and d are runtime inputs (in ``consts``), not compile-time constants: a sweep over
noise levels and dimensions reuses one compiled program per ``(T, max_dim)``. The arrays
are ``max_dim`` wide; the columns from d on are zero in the design and in w*, and the Gram
factor has 1 on their diagonal, so the fit's weights there are exactly zero. With
max_dim = d (the default) nothing is padded.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import validate
from collapse_jax.data.source import RowSpec, Task


def fixed_design_labels(design: jax.Array, w: jax.Array, sigma2: jax.Array, key: jax.Array,
                        n: int) -> jax.Array:
  """``[n]`` labels ``X w + N(0, sigma2)`` for rows ``0..n-1`` of the design repeated.

  ``design [T, d]``; the product is tiled, not gathered (the loop's n is a multiple of T;
  a user's draw from a saved model may be any n).
  """
  mean = jnp.tile(design @ w, -(-n // design.shape[0]))[:n]
  return mean + jnp.sqrt(sigma2) * jax.random.normal(key, (n,))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearSource:
  dim: int
  max_dim: int    # compiled width, >= dim
  num_rows: int   # T
  sigma2: float
  n_test: int
  num_train = None
  # A row is one label of the fixed design's next draw.
  row_spec = RowSpec(fields={"y": ((), "float32")}, data="y")

  def consts(self):
    return {"sigma2": np.float32(self.sigma2), "dim": np.int32(self.dim)}

  def task(self, consts, key: jax.Array) -> Task:
    kx, kw, kt = jax.random.split(key, 3)
    active = jnp.arange(self.max_dim) < consts["dim"]
    design = jnp.where(active, jax.random.normal(kx, (self.num_rows, self.max_dim)), 0.0)
    w_star = jnp.where(active, jax.random.normal(kw, (self.max_dim,)), 0.0)
    x_test = jax.random.normal(kt, (self.n_test, self.max_dim))
    padding = jnp.diag(jnp.where(active, 0.0, 1.0))  # identity on the padded columns
    return Task(test={"x": x_test, "y": x_test @ w_star},
                aux={"design": design, "w_star": w_star, "sigma2": consts["sigma2"],
                     "padding": padding,
                     # Factor of X^T X, reused by every fit on whole blocks.
                     "gram_chol": jnp.linalg.cholesky(design.T @ design + padding)})

  def real(self, consts, task: Task, key: jax.Array, block: jax.Array, n: int):
    del block  # fresh labels come from the key, which differs per block
    aux = task.aux
    return {"y": fixed_design_labels(aux["design"], aux["w_star"], aux["sigma2"], key, n)}


def _max_dim(data) -> int:
  return data.get("max_dim") or data.dim  # 0 / absent: unpadded


def build(data) -> LinearSource:
  return LinearSource(dim=data.dim, max_dim=_max_dim(data),
                      num_rows=data.num_rows, sigma2=data.sigma2, n_test=data.n_test)


RANGES = {
    "dim": validate.COUNT,
    "num_rows": validate.COUNT,
    "sigma2": validate.Range(0, note="0: noiseless labels"),
    "n_test": validate.COUNT,
    "max_dim": validate.Range(0, integer=True, note="0: dim"),
}


def check_config(config) -> str | None:
  """The protocol needs T >= d + 2 (the closed forms divide by T - d - 1)."""
  problem = validate.fields_problem(config.data, RANGES, "data.")
  if problem:
    return problem
  d, t = config.data.dim, config.data.num_rows
  if t <= d + 1:
    return f"Linear regression needs num_rows T > dim d + 1, got T={t}, d={d}."
  if _max_dim(config.data) < d:
    return f"data.max_dim ({config.data.max_dim}) must be at least data.dim ({d})."
  if config.n_real != t:
    return f"Linear regression trains on the fixed design: n_real must equal num_rows ({t})."
  if validate.policy_of(config).n_synth % t:
    return (f"Linear regression regenerates labels for the whole fixed design: the "
            f"synthetic rows per generation must be a multiple of num_rows ({t}).")
  return None
