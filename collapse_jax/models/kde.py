"""Gaussian kernel density estimation (Kazdan et al.'s KDE setting).

The fitted model is the training set itself: ``p(x) = sum_i c_i N(x; x_i, h^2 I) / sum_i c_i``
over the view's rows. Bandwidth h is fixed, or Scott's / Silverman's rule on the training
set's (count-weighted) per-dimension standard deviation averaged over dimensions.
Sampling picks a training row uniformly (with multiplicity) and adds N(0, h^2 I) noise.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from collapse_jax import validate
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.loop.pool import TrainView, draw_rows

RULES = ("scott", "silverman")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelDensity:
  field: str        # the rows' point field, [dim] per row
  dim: int
  capacity: int
  bandwidth: float | str   # a number, "scott" or "silverman"

  def init(self, key, task: Task):
    del key, task
    return {"points": jnp.zeros((self.capacity, self.dim)),
            "counts": jnp.zeros((self.capacity,), jnp.int32),
            "bandwidth": jnp.ones(())}

  def _bandwidth(self, view: TrainView) -> jax.Array:
    if not isinstance(self.bandwidth, str):
      return jnp.asarray(self.bandwidth, jnp.float32)
    n = view.size().astype(jnp.float32)
    count = lambda c: c.astype(jnp.float32)
    mean = view.reduce(lambda rows, c: count(c) @ rows[self.field]) / n
    var = view.reduce(lambda rows, c: count(c) @ (rows[self.field] - mean) ** 2) / (n - 1)
    sigma = jnp.mean(jnp.sqrt(var))
    d = self.dim
    factor = (n ** (-1 / (d + 4)) if self.bandwidth == "scott"
              else (n * (d + 2) / 4) ** (-1 / (d + 4)))
    return factor * sigma

  def fit(self, state, view: TrainView, task: Task, key):
    del state, task, key
    return {"points": view.pool.data[self.field], "counts": view.counts,
            "bandwidth": self._bandwidth(view)}

  def sample(self, state, task: Task, key, n: int):
    k_row, k_noise = jax.random.split(key)
    rows = draw_rows(state["counts"], k_row, n)
    noise = state["bandwidth"] * jax.random.normal(k_noise, (n, self.dim))
    return {self.field: state["points"][rows] + noise}

  def log_likelihood(self, state, task: Task, rows, key=None) -> jax.Array:
    """``[m]`` log p(x) of ``rows``' points ``[m, d]``."""
    del task, key
    return self.log_density(state, rows[self.field])

  def log_density(self, state, x: jax.Array, block: int = 1024) -> jax.Array:
    """``[m]`` log p(x) for ``x [m, d]``.

    The sum over training points runs in fixed blocks in row order with a shift taken from
    the exact maximum, so the result does not depend on the capacity.
    """
    h2 = state["bandwidth"] ** 2
    points, counts = state["points"], state["counts"]
    pad = -points.shape[0] % block
    points = jnp.pad(points, ((0, pad), (0, 0))).reshape(-1, block, self.dim)
    counts = jnp.pad(counts, (0, pad)).reshape(-1, block)
    sq = lambda p: jnp.sum((x[:, None, :] - p[None]) ** 2, -1)  # [m, block]
    shift = jnp.min(jax.vmap(lambda p, c: jnp.min(jnp.where(c > 0, sq(p), jnp.inf), 1))(
        points, counts), 0)

    def add(acc, blk):
      p, c = blk
      # Unused rows may lie closer than the shift: mask them before exp can overflow.
      kernel = jnp.where(c > 0, jnp.exp(-(sq(p) - shift[:, None]) / (2 * h2)), 0.0)
      return acc + kernel @ c.astype(jnp.float32), None

    total, _ = jax.lax.scan(add, jnp.zeros(x.shape[0]), (points, counts))
    n = jnp.sum(counts).astype(jnp.float32)
    return (jnp.log(total / n) - shift / (2 * h2)
            - 0.5 * self.dim * jnp.log(2 * jnp.pi * h2))

  def evaluate(self, state, task: Task, key):
    del key
    return {"test_nll": -jnp.mean(self.log_likelihood(state, task, task.test)),
            "bandwidth": state["bandwidth"]}


def bandwidth_of(value: float | str) -> float | str:
  """``config.model.bandwidth`` as a number or a rule name. The field's default is a rule
  ('scott'), so the command line hands a number over as a string ('0.5'): read it back."""
  if isinstance(value, str):
    try:
      return float(value)
    except ValueError:
      return value.strip().lower()
  return value


def build(config, layout, spec: RowSpec) -> KernelDensity:
  return KernelDensity(field=spec.data, dim=spec.shape[0], capacity=layout.capacity,
                       bandwidth=bandwidth_of(config.model.bandwidth))


def check_config(config, spec: RowSpec) -> str | None:
  if len(spec.shape) != 1 or spec.aux or spec.mask:
    return (f"The kde model needs rows of one point vector [dim]; this source's rows are "
            f"{spec.fields}.")
  bw = bandwidth_of(config.model.bandwidth)
  if isinstance(bw, str) and bw not in RULES:
    return f"Unknown KDE bandwidth rule {bw!r}; use a number > 0 or one of {RULES}."
  if not isinstance(bw, str) and not validate.POSITIVE.holds(bw):
    return (f"model.bandwidth must be {validate.POSITIVE} or a rule ({', '.join(RULES)}), "
            f"got {bw!r}.")
  return None
