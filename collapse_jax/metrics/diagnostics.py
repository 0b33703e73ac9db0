"""Collapse diagnostics: memorization, k-NN entropy, tail coverage and n-gram novelty.

Pure functions on host arrays. Feature rows are ``[n, d]`` floats (images flattened to
classifier features, 2-D toys as they are); token rows are ``[n, T]`` ints.

  nearest_train_distances  sorted distances ``[n, k]`` from each sample to its k nearest
                           training rows, the building block of the rest.
  memorization             share of samples that are near-copies of one training row
                           (d1 < d2 / 3), and the nearest-training-row distance of the
                           samples against that of held-out real rows (its floor).
  kl_entropy               Kozachenko-Leonenko k-NN differential entropy (nats).
  duplicate_share          share of rows that exactly repeat an earlier row.
  tail_coverage            does the model still reach the real distribution's tail, and
                           does it put the tail's mass there (Dohmatob et al., 2024)?
  ngram_seen_share         share of generated n-grams that occur in the training rows.
  distinct_ngram_share     distinct / total n-grams of the generated rows.

Distances come from ``[row_batch, col_batch]`` tiles, scanned over column tiles and
mapped over row tiles, so 10k x 10k rows of 2048-d features hold one 32 MiB tile, never
an ``[n, m, d]`` difference tensor. Up to 16-d (the toys) a tile is summed from
coordinate differences, which do not cancel. Wider rows use one matmul per tile,
``|a|^2 - 2 a.b + |b|^2``, which cancels (an exact copy comes out at
``sqrt(float32 eps) * |a|``, not 0; rows are centred on the support's mean first to keep
``|a|`` small), so there it only ranks the candidates: the k winners' distances are
recomputed from the differences of the rows as given. Either way an exact copy is at
exactly 0 and a hand-computable distance is exact, which the memorization boundary and
`kl_entropy`'s duplicate handling rely on. Neighbours closer than the matmul's
resolution may be ranked in the wrong order among themselves (their distances are still
exact), which only matters for dense sets of wide rows.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from scipy import special

from collapse_jax.metrics.precision_recall import tiles

# Squared distances are differences of large dot products; keep them float32-exact on
# backends whose default matmul precision is lower (TPU's bfloat16 passes).
_PRECISION = jax.lax.Precision.HIGHEST
# Up to this width a tile's squared distances are summed from coordinate differences
# (no cancellation) instead of the matmul form, whose cancellation error,
# ~sqrt(float32 eps) * |row| ~ 3e-4 for unit-scale rows, exceeds the nearest-neighbour
# distance of dense low-d sets (~6e-5 for 20k 1-D normal rows) and ranks the wrong
# neighbours: kl_entropy of 20k 1-D normal rows came out 0.36 nats (25%) high that way.
# d such passes cost about what the matmul does at this width.
_DIRECT_MAX_D = 16


@functools.partial(jax.jit, static_argnames=("k", "row_batch", "col_batch"))
def _knn(queries: jax.Array, support: jax.Array, query_ids: jax.Array, *, k: int,
         row_batch: int, col_batch: int) -> jax.Array:
  """Sorted distances ``[n, k]`` from ``queries [n, d]`` to their k nearest ``support
  [m, d]`` rows. ``query_ids [n]``: the index of each query within ``support`` (that
  column is skipped: self-distance excluded), or -1 for a query that is not one of them.
  Padding columns carry index -1 and are skipped whatever the query's index."""
  n, m = queries.shape[0], support.shape[0]
  direct = queries.shape[1] <= _DIRECT_MAX_D
  # The matmul form cancels less on rows centred on the support's mean; differences
  # need no centring (and stay the exact differences of the rows as given without it).
  mean = jnp.zeros(support.shape[1]) if direct else jnp.mean(support, axis=0)
  cols = tiles(support - mean, col_batch)
  col_sq = jnp.sum(cols * cols, axis=-1)
  col_ids = tiles(jnp.arange(m), col_batch, fill=-1)

  def knn_of_rows(args):
    rows, row_ids = args
    rows_c = rows - mean
    rows_sq = jnp.sum(rows_c * rows_c, axis=1)

    def merge_tile(best, tile):
      best_sq, best_ids = best
      col, sq_norms, ids = tile
      if direct:  # one [rows, cols] difference per coordinate: nothing cancels
        sq = sum(jnp.square(rows_c[:, j, None] - col[None, :, j])
                 for j in range(col.shape[1]))
      else:
        sq = (rows_sq[:, None] - 2.0 * jnp.matmul(rows_c, col.T, precision=_PRECISION)
              + sq_norms[None, :])
      skip = (ids[None, :] < 0) | (ids[None, :] == row_ids[:, None])
      sq = jnp.where(skip, jnp.inf, sq)
      if direct and k == 1:
        # A fused min: XLA:CPU's top_k (and argmin) cost ~6x the distances of a 2-D tile,
        # and exact values need no indices to refine.
        return (jnp.minimum(best_sq, sq.min(axis=1, keepdims=True)), best_ids), None
      merged_sq = jnp.concatenate([best_sq, sq], axis=1)
      merged_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids, sq.shape)], axis=1)
      neg_sq, where = jax.lax.top_k(-merged_sq, k)
      # The direct path's values are final: leave its indices out (XLA drops the gather).
      ids = best_ids if direct else jnp.take_along_axis(merged_ids, where, axis=1)
      return (-neg_sq, ids), None

    start = (jnp.full((rows.shape[0], k), jnp.inf), jnp.full((rows.shape[0], k), -1))
    (best_sq, best_ids), _ = jax.lax.scan(merge_tile, start, (cols, col_sq, col_ids))
    if direct:
      return jnp.sqrt(best_sq)  # ascending: top_k of the negated values, or k = 1
    # The matmul form only ranked the candidates: their exact distances come from the
    # differences of the rows as given (the callers check k against m, so every winner
    # is a real column).
    diff = rows[:, None, :] - support[jnp.maximum(best_ids, 0)]
    return jnp.sort(jnp.sqrt(jnp.sum(diff * diff, axis=-1)), axis=1)

  row_tiles = (tiles(queries, row_batch), tiles(query_ids, row_batch, fill=-1))
  return jax.lax.map(knn_of_rows, row_tiles).reshape(-1, k)[:n]


def _as_rows(x: npt.ArrayLike, name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name} must be non-empty rows [n, d], got shape {x.shape}")
  return x


def _check_width(a: np.ndarray, b: np.ndarray, names: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"{names} must have the same width d,"
                     f" got {a.shape[1]} and {b.shape[1]}")


def _knn_distances(queries: np.ndarray, support: np.ndarray, k: int,
                   query_ids: np.ndarray | None, row_batch: int, col_batch: int
                   ) -> np.ndarray:
  """`_knn` on host arrays, tiles no larger than the sets; float32 ``[n, k]``."""
  available = support.shape[0] - (query_ids is not None)
  if not 1 <= k <= available:
    raise ValueError(f"k must be in [1, {available}] for {support.shape[0]} reference rows"
                     f"{' (itself excluded)' if query_ids is not None else ''}, got {k}")
  if query_ids is None:
    query_ids = np.full(queries.shape[0], -1)
  return np.asarray(_knn(jnp.asarray(queries), jnp.asarray(support),
                         jnp.asarray(query_ids, jnp.int32), k=k,
                         row_batch=min(row_batch, queries.shape[0]),
                         col_batch=min(col_batch, support.shape[0])))


def nearest_train_distances(samples: npt.ArrayLike, train: npt.ArrayLike, k: int = 2, *,
                            row_batch: int = 1024, col_batch: int = 8192) -> np.ndarray:
  """Euclidean distances ``[n, k]`` (float32, ascending) from each of ``samples [n, d]``
  to its k nearest rows of ``train [m, d]``. ``row_batch`` x ``col_batch`` bounds the
  distance tile held in memory (32 MiB at the defaults)."""
  samples, train = _as_rows(samples, "samples"), _as_rows(train, "train")
  _check_width(samples, train, "samples and train")
  return _knn_distances(samples, train, k, None, row_batch, col_batch)


def memorization(samples: npt.ArrayLike, train: npt.ArrayLike, heldout: npt.ArrayLike, *,
                 row_batch: int = 1024, col_batch: int = 8192) -> dict[str, float]:
  """How close ``samples [n, d]`` sit to ``train [m, d]``, against ``heldout [h, d]`` real
  rows the model never saw.

  ``memorized_share``: share of samples whose nearest training row is closer than a third
  of the distance to the second nearest (``d1 < d2 / 3``, strict): a near-copy of ONE
  training row rather than a point between several (the criterion of the diffusion
  memorization studies, Carlini et al. 2023, Yoon et al. 2023). ``nn_distance``: mean
  ``d1`` of the samples; ``nn_distance_heldout``: the same for the held-out rows, what a
  model that generalises reaches; ``nn_distance_ratio``: their ratio, below 1 when the
  samples hug the training set (NaN when held-out rows copy training rows, ``d1 = 0``).
  """
  train = _as_rows(train, "train")
  batch = dict(row_batch=row_batch, col_batch=col_batch)
  nearest = nearest_train_distances(samples, train, k=2, **batch).astype(np.float64)
  nearest_heldout = nearest_train_distances(heldout, train, k=1, **batch)[:, 0]
  d1, d2 = nearest[:, 0], nearest[:, 1]
  nn_distance = float(d1.mean())
  nn_heldout = float(nearest_heldout.astype(np.float64).mean())
  return {
      # 3 * d1 < d2 rather than d1 < d2 / 3: no rounding of the division at the boundary.
      "memorized_share": float(np.mean(3.0 * d1 < d2)),
      "nn_distance": nn_distance,
      "nn_distance_heldout": nn_heldout,
      "nn_distance_ratio": nn_distance / nn_heldout if nn_heldout > 0 else float("nan"),
  }


def distance_floor(x: npt.ArrayLike) -> float:
  """The smallest distance `kl_entropy` uses: float32's resolution at the magnitude of the
  rows, ``float32 eps * max |x_ij|`` (~1.2e-7 x the largest coordinate; the smallest
  normal float32 for rows that are all zero). Proportional to the data, unlike one ulp
  (``np.spacing``), which jumps at powers of two."""
  scale = float(np.max(np.abs(np.asarray(x, np.float32))))
  finfo = np.finfo(np.float32)
  return float(finfo.eps) * scale if scale > 0 else float(finfo.tiny)


def kl_entropy(x: npt.ArrayLike, k: int = 1, *, row_batch: int = 1024,
               col_batch: int = 8192) -> float:
  """Kozachenko-Leonenko differential entropy (nats) of the distribution of ``x [n, d]``.

  ``H = psi(n) - psi(k) + log V_d + (d / n) sum_i log eps_i``, ``eps_i`` the distance from
  ``x_i`` to its k-th nearest OTHER row (itself excluded by index, so its exact copies
  count as neighbours at 0) and ``V_d = pi^(d/2) / Gamma(d/2 + 1)`` the unit ball's
  volume. Consistent for continuous densities; at n = 20k it is within ~1% of a standard
  normal's entropy for d <= 5 (tests/test_diagnostics.py), with a bias that grows with d.

  Duplicates: collapse makes exact copies common, and a copy has ``eps = 0``, so
  ``log eps = -inf``. Each ``eps`` is floored at `distance_floor`, float32's resolution
  at the data's magnitude (~1.2e-7 x its largest coordinate): float32 rows cannot be told
  apart more finely, and a distribution with atoms has differential entropy -inf, which
  the floor turns into a very low, finite value that keeps falling as the copies' share
  grows. A fully collapsed set gives ``psi(n) - psi(k) + log V_d + d log(floor)``
  (2000 rows of a 2-D standard normal: 2.84 nats; 1000 of them each twice: -19.8; all
  2000 equal to the first: -26.6, its floor set by that row's magnitude, 0.13);
  partial collapse lands in between, pulled down by about
  ``(share of rows with k copies) * d * log(floor / typical eps)``. The floor is
  proportional to the data, so ``H(c x) = H(x) + d log c`` holds with copies too.
  Deduplicating first instead would give a set made of pairs of copies the entropy of its
  distinct rows, blind to the collapse this is meant to see, and a fully collapsed set no
  estimate at all. Once copies appear the floor term dominates the estimate: report
  `duplicate_share` beside it to tell fewer copies from a broader distribution.
  """
  x = _as_rows(x, "x")
  n, d = x.shape
  eps = _knn_distances(x, x, k, np.arange(n), row_batch, col_batch)[:, k - 1]
  eps = np.maximum(eps.astype(np.float64), distance_floor(x))
  log_unit_ball = 0.5 * d * np.log(np.pi) - special.gammaln(0.5 * d + 1.0)
  return float(special.digamma(n) - special.digamma(k) + log_unit_ball
               + d * np.mean(np.log(eps)))


def duplicate_share(x: npt.ArrayLike) -> float:
  """Share of the rows of ``x [n, ...]`` that exactly repeat an earlier row:
  ``1 - distinct / n`` (0 for distinct rows, ``1 - 1/n`` for one row repeated)."""
  x = np.asarray(x)
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(f"x must hold at least one row, got shape {x.shape}")
  # -0.0 and 0.0 are the same row; np.unique compares floats by value, so they merge.
  return 1.0 - len(np.unique(x.reshape(x.shape[0], -1), axis=0)) / x.shape[0]


def tail_coverage(heldout: npt.ArrayLike, samples: npt.ArrayLike,
                  center: npt.ArrayLike | None = None, quantile: float = 0.95, k: int = 5,
                  *, row_batch: int = 1024, col_batch: int = 8192) -> dict[str, float]:
  """Whether ``samples [m, d]`` still reach the tail of the real ``heldout [n, d]`` rows.

  The tail: held-out rows farther from ``center [d]`` (default: the held-out mean) than
  the ``quantile`` quantile ``r_q`` of those distances (``tail_rows`` of them,
  ``tail_radius`` = ``r_q``).

  ``tail_recall``: share of tail rows covered by some sample, a row being covered when
  its nearest sample is no farther than its k-th nearest other held-out row (a ball
  around each REAL row, as in the coverage of Naeem et al. 2020, the outlier-robust form
  of Kynkaanniemi et al.'s recall: a stray sample cannot inflate it), restricted to the
  tail. About ``1 - 2^-k`` (0.97 at k = 5) when samples and held-out rows are equally many
  draws of one distribution; it falls as the model forgets the tails.

  ``tail_mass_ratio``: share of samples farther from ``center`` than ``r_q``, over
  ``1 - quantile``: 1 for a model that keeps its tails, 0 when they vanish (the tail
  cut-off of Dohmatob et al. 2024), above 1 for one that overdisperses.
  """
  heldout, samples = _as_rows(heldout, "heldout"), _as_rows(samples, "samples")
  _check_width(heldout, samples, "heldout and samples")
  if not 0.0 < quantile < 1.0:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}")
  real = heldout.astype(np.float64)
  center = real.mean(axis=0) if center is None else np.asarray(center, np.float64)
  if center.shape != (heldout.shape[1],):
    raise ValueError(f"center must be [{heldout.shape[1]}], got shape {center.shape}")
  real_radius = np.linalg.norm(real - center, axis=1)
  sample_radius = np.linalg.norm(samples.astype(np.float64) - center, axis=1)
  tail_radius = float(np.quantile(real_radius, quantile))
  tail = np.flatnonzero(real_radius > tail_radius)
  mass_ratio = float(np.mean(sample_radius > tail_radius) / (1.0 - quantile))
  if len(tail) == 0:  # every row at the same distance from center: no tail to cover
    return {"tail_recall": float("nan"), "tail_mass_ratio": mass_ratio, "tail_rows": 0,
            "tail_radius": tail_radius}
  batch = dict(row_batch=row_batch, col_batch=col_batch)
  # Only the tail rows' balls are needed: they query all held-out rows, themselves skipped.
  ball = _knn_distances(heldout[tail], heldout, k, tail, **batch)[:, k - 1]
  nearest_sample = _knn_distances(heldout[tail], samples, 1, None, **batch)[:, 0]
  return {"tail_recall": float(np.mean(nearest_sample <= ball)),
          "tail_mass_ratio": mass_ratio, "tail_rows": int(len(tail)),
          "tail_radius": tail_radius}


# ---- n-grams of token rows ----------------------------------------------------------


def _windows(tokens: npt.ArrayLike, n: int, pad_id: int | None,
             mask: npt.ArrayLike | None, name: str) -> np.ndarray:
  """The ``[w, n]`` windows of ``tokens [rows, T]`` that hold no padding: ``mask`` (True
  = real token) if given, else ``tokens != pad_id``, else every token is real."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"{name} must be integer token rows [rows, T], got {tokens.dtype}"
                     f" {tokens.shape}")
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  if mask is None:
    mask = np.ones(tokens.shape, bool) if pad_id is None else tokens != pad_id
  mask = np.asarray(mask, bool)
  if mask.shape != tokens.shape:
    raise ValueError(f"{name}'s mask must be {tokens.shape}, got {mask.shape}")
  if tokens.shape[1] < n:
    return np.zeros((0, n), np.int64)
  windows = np.lib.stride_tricks.sliding_window_view(tokens, n, axis=1).reshape(-1, n)
  real = np.lib.stride_tricks.sliding_window_view(mask, n, axis=1).reshape(-1, n).all(1)
  windows = windows[real].astype(np.int64)
  if windows.size and windows.min() < 0:
    raise ValueError(f"{name} holds negative token ids outside its padding")
  return windows


def _ngram_ids(*window_sets: np.ndarray) -> list[np.ndarray]:
  """One int64 id per window, equal exactly when the windows are (no hash collisions):
  the window read as a number in base ``vocab`` (max id + 1) when ``vocab^n`` fits in
  int64 (n = 4 up to a 55k vocabulary), else its index among the distinct windows of all
  the sets (a sort of the rows, slower but as exact)."""
  n = window_sets[0].shape[1]
  vocab = 1 + max((int(w.max()) for w in window_sets if w.size), default=0)
  if vocab ** n < 2 ** 63:
    powers = vocab ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return [w @ powers for w in window_sets]
  _, ids = np.unique(np.concatenate(window_sets), axis=0, return_inverse=True)
  return np.split(ids.reshape(-1).astype(np.int64),
                  np.cumsum([len(w) for w in window_sets])[:-1])


def ngram_seen_share(generated: npt.ArrayLike, training: npt.ArrayLike, n: int = 4, *,
                     pad_id: int | None = 0, generated_mask: npt.ArrayLike | None = None,
                     training_mask: npt.ArrayLike | None = None) -> float:
  """Share of the generated n-grams (windows of ``generated [rows, T]`` with no padding,
  each occurrence counted) that occur among the n-grams of ``training [rows', T']``: near
  1 when the model recites its training data, lower when it composes new text (and, for
  a good model, close to the share of held-out text's n-grams seen in training).

  Padding: ``pad_id`` marks it (None: no padding), or the masks do (True = real token),
  which overrides ``pad_id`` for that set. NaN when no generated window is free of it.
  """
  gen = _windows(generated, n, pad_id, generated_mask, "generated")
  train = _windows(training, n, pad_id, training_mask, "training")
  if len(gen) == 0:
    return float("nan")
  gen_ids, train_ids = _ngram_ids(gen, train)
  return float(np.mean(np.isin(gen_ids, train_ids)))


def distinct_ngram_share(generated: npt.ArrayLike, n: int = 4, *, pad_id: int | None = 0,
                         mask: npt.ArrayLike | None = None) -> float:
  """Distinct / total n-grams (windows with no padding) of ``generated [rows, T]``: 1 when
  no n-gram repeats, falling as generations collapse onto the same phrases (distinct-n).
  NaN when no window is free of padding."""
  windows = _windows(generated, n, pad_id, mask, "generated")
  if len(windows) == 0:
    return float("nan")
  (ids,) = _ngram_ids(windows)
  return len(np.unique(ids)) / len(ids)
