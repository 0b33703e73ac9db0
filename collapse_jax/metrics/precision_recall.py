"""Improved precision and recall (Kynkaanniemi et al., 2019) of ``[n, d]`` features.

Each set's manifold is the union of balls around its samples, each ball reaching the
sample's k-th nearest neighbour in the same set. Precision is the fraction of fake samples
inside the real manifold (fidelity); recall is the fraction of real samples inside the
fake manifold (coverage), the number that falls first when generations collapse.

Distances come from matmuls over ``[row_batch, col_batch]`` tiles, scanned so that
memory stays at one tile whatever the set sizes (50k x 50k included).
"""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy.typing as npt

# Squared distances are differences of large dot products; keep them float32-exact on
# backends whose default matmul precision is lower.
_PRECISION = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrecisionRecall:
  precision: float
  recall: float


def _sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances ``[m, c]`` between rows of ``[m, d]`` and ``[c, d]``."""
  cross = jnp.matmul(a, b.T, precision=_PRECISION)
  sq = jnp.sum(a * a, axis=1)[:, None] - 2.0 * cross + jnp.sum(b * b, axis=1)[None, :]
  return jnp.maximum(sq, 0.0)  # rounding can dip just below zero for near-equal rows


def tiles(x: jax.Array, tile: int, fill: float | bool = 0) -> jax.Array:
  """``[n, ...]`` padded with ``fill`` to ``[ceil(n / tile), tile, ...]``."""
  pad = -x.shape[0] % tile
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
  return x.reshape(-1, tile, *x.shape[1:])


@functools.partial(jax.jit, static_argnames=("k", "row_batch", "col_batch"))
def _knn_sq_radii(features: jax.Array, *, k: int, row_batch: int,
                  col_batch: int) -> jax.Array:
  n = features.shape[0]
  cols = tiles(features, col_batch)
  col_valid = tiles(jnp.ones(n, bool), col_batch, fill=False)

  def radii_of_rows(rows):
    def merge_tile(nearest, tile):
      col, valid = tile
      sq = jnp.where(valid[None, :], _sq_distances(rows, col), jnp.inf)
      merged = jnp.concatenate([nearest, sq], axis=1)
      return -jax.lax.top_k(-merged, k + 1)[0], None

    nearest = jnp.full((rows.shape[0], k + 1), jnp.inf)
    nearest, _ = jax.lax.scan(merge_tile, nearest, (cols, col_valid))
    # The nearest "neighbour" is the sample itself at distance 0, so the k-th other
    # sample is at index k (the reference implementation counts the same way).
    return nearest[:, k]

  return jax.lax.map(radii_of_rows, tiles(features, row_batch)).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("row_batch", "col_batch"))
def _covered(queries: jax.Array, support: jax.Array, support_sq_radii: jax.Array, *,
             row_batch: int, col_batch: int) -> jax.Array:
  cols = tiles(support, col_batch)
  # Padding samples get radius -inf: no distance is below it, so they cover nothing.
  radii = tiles(support_sq_radii, col_batch, fill=-jnp.inf)

  def covered_rows(rows):
    def add_tile(covered, tile):
      col, col_radii = tile
      inside = _sq_distances(rows, col) <= col_radii[None, :]
      return covered | jnp.any(inside, axis=1), None

    covered, _ = jax.lax.scan(add_tile, jnp.zeros(rows.shape[0], bool), (cols, radii))
    return covered

  return jax.lax.map(covered_rows, tiles(queries, row_batch)).reshape(-1)[:queries.shape[0]]


def _as_features(features: npt.ArrayLike) -> jax.Array:
  features = jnp.asarray(features, jnp.float32)
  chex.assert_rank(features, 2)
  return features


def _check_k(features: jax.Array, k: int, name: str) -> None:
  if not 0 < k < features.shape[0]:
    raise ValueError(f"k must be in [1, n - 1]; {name} has n = {features.shape[0]}, k = {k}")


def knn_sq_radii(features: npt.ArrayLike, *, k: int = 3, row_batch: int = 1024,
                 col_batch: int = 8192) -> jax.Array:
  """Squared distance ``[n]`` from each of ``[n, d]`` features to its k-th nearest other
  sample: the balls of the set's manifold. Pass a real set's to `precision_recall` to
  compute them once for many fake sets."""
  features = _as_features(features)
  _check_k(features, k, "the set")
  n = features.shape[0]
  return _knn_sq_radii(features, k=k, row_batch=min(row_batch, n), col_batch=min(col_batch, n))


def knn_radii(features: npt.ArrayLike, **kwargs) -> jax.Array:
  """Distance ``[n]`` to the k-th nearest other sample (`knn_sq_radii`'s square root)."""
  return jnp.sqrt(knn_sq_radii(features, **kwargs))


def precision_recall(real_features: npt.ArrayLike, fake_features: npt.ArrayLike, *,
                     k: int = 3, real_sq_radii: jax.Array | None = None,
                     row_batch: int = 1024, col_batch: int = 8192) -> PrecisionRecall:
  """Improved precision and recall of ``[n_fake, d]`` fake against ``[n_real, d]`` real.

  A sample counts as inside a ball when its distance is at most the radius, as in the
  reference implementation. ``real_sq_radii`` (`knn_sq_radii` of the real features, same
  k) skips recomputing the real balls. ``row_batch`` x ``col_batch`` bounds the distance
  tile held in memory (32 MiB at the defaults).
  """
  real, fake = _as_features(real_features), _as_features(fake_features)
  chex.assert_equal_shape_suffix([real, fake], 1)
  _check_k(real, k, "real")
  _check_k(fake, k, "fake")
  batch = dict(row_batch=row_batch, col_batch=col_batch)
  if real_sq_radii is None:
    real_sq_radii = knn_sq_radii(real, k=k, **batch)
  chex.assert_shape(real_sq_radii, (real.shape[0],))
  fake_sq_radii = knn_sq_radii(fake, k=k, **batch)

  def covered(queries, support, radii):
    return jnp.mean(_covered(queries, support, radii, row_batch=min(row_batch, len(queries)),
                             col_batch=min(col_batch, len(support))))

  return PrecisionRecall(precision=float(covered(fake, real, real_sq_radii)),
                         recall=float(covered(real, fake, fake_sq_radii)))
