"""Collapse diagnostics (metrics/diagnostics.py) against hand computations on a few rows."""
from __future__ import annotations

import math

import numpy as np
import pytest

from collapse_jax.metrics import diagnostics as dg

# Widths 2 and 20 take the two distance paths: coordinate differences up to 16-d, the
# matmul form (ranking only, exact distances recomputed) above.
WIDTHS = [2, 20]


def _rows(values, width: int) -> np.ndarray:
  """``[n, width]`` rows from points given in their first coordinates, the rest zero."""
  values = np.asarray(values, np.float32).reshape(len(values), -1)
  return np.pad(values, [(0, 0), (0, width - values.shape[1])])


def _brute_knn(queries, support, k, exclude_self=False):
  """float64 sorted k-NN distances from the full distance matrix."""
  q, s = np.asarray(queries, np.float64), np.asarray(support, np.float64)
  dist = np.sqrt(((q[:, None, :] - s[None]) ** 2).sum(-1))
  if exclude_self:
    np.fill_diagonal(dist, np.inf)
  return np.sort(dist, axis=1)[:, :k]


# ---- nearest training rows --------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_nearest_train_distances_by_hand(width):
  train = _rows([[0, 0], [1, 0], [3, 0], [7, 0]], width)
  samples = _rows([[2, 0], [6, 0], [-1, 0], [3, 4], [7, 0]], width)
  distances = dg.nearest_train_distances(samples, train, k=2)
  assert distances.dtype == np.float32 and distances.shape == (5, 2)
  # 2 sits between 1 and 3; (3, 4) is 4 above (3, 0) and sqrt(2^2 + 4^2) from (1, 0);
  # an exact copy is at exactly 0 whichever path computed it.
  expected = [[1, 1], [1, 3], [1, 2], [4, math.sqrt(20)], [0, 4]]
  np.testing.assert_allclose(distances, expected, rtol=1e-6)


@pytest.mark.parametrize("width", [3, 24])
def test_chunked_equals_unchunked_and_brute_force(width):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(37, width)).astype(np.float32)
  support = rng.normal(size=(53, width)).astype(np.float32)
  whole = dg.nearest_train_distances(queries, support, k=4)
  # Tiles that divide neither set: padding rows and columns on both sides.
  chunked = dg.nearest_train_distances(queries, support, k=4, row_batch=8, col_batch=16)
  np.testing.assert_allclose(chunked, whole, rtol=1e-6)
  np.testing.assert_allclose(whole, _brute_knn(queries, support, 4), rtol=1e-5)
  # Self-exclusion by index survives tiling: the diagonal falls in different tiles.
  assert dg.kl_entropy(support, k=2, row_batch=5, col_batch=7) == pytest.approx(
      dg.kl_entropy(support, k=2), rel=1e-6)


def test_k_beyond_the_reference_rows_is_refused():
  with pytest.raises(ValueError, match="k must be in"):
    dg.nearest_train_distances(np.zeros((2, 2)), np.zeros((3, 2)), k=4)
  with pytest.raises(ValueError, match="itself excluded"):
    dg.kl_entropy(np.zeros((3, 2)), k=3)


# ---- memorization -------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_memorization_criterion_at_its_boundary(width):
  # Training rows at 0 and 3: a sample at x in [0, 1.5] has d1 = x, d2 = 3 - x, and is a
  # near-copy iff x < (3 - x) / 3, i.e. x < 0.75; 0.75 itself (d1 = d2 / 3) is not.
  train = _rows([0, 3], width)
  samples = _rows([0.74, 0.75, 0.76, 3.0], width)
  heldout = _rows([1.5, -1.0], width)
  result = dg.memorization(samples, train, heldout)
  assert result["memorized_share"] == 0.5  # 0.74, and 3.0 (an exact copy: d1 = 0)
  nn_distance = (0.74 + 0.75 + 0.76 + 0.0) / 4
  assert result["nn_distance"] == pytest.approx(nn_distance, rel=1e-6)
  assert result["nn_distance_heldout"] == pytest.approx((1.5 + 1.0) / 2)
  assert result["nn_distance_ratio"] == pytest.approx(nn_distance / 1.25, rel=1e-6)


def test_memorization_ratio_is_nan_when_heldout_copies_train():
  train = _rows([0, 3], 2)
  result = dg.memorization(_rows([1.0], 2), train, train)
  assert result["nn_distance_heldout"] == 0.0 and math.isnan(result["nn_distance_ratio"])


# ---- Kozachenko-Leonenko entropy ----------------------------------------------------


def test_kl_entropy_by_hand():
  # Points 0, 1, 3, 7 on a line (V_1 = 2). k = 1: eps = 1, 1, 2, 4, and
  # psi(4) - psi(1) = 1 + 1/2 + 1/3.
  line = np.array([[0.0], [1.0], [3.0], [7.0]])
  expected = 11 / 6 + math.log(2) + (math.log(2) + math.log(4)) / 4
  assert dg.kl_entropy(line) == pytest.approx(expected, rel=1e-6)
  # k = 2: the second nearest other points are at 3, 2, 3, 6; psi(4) - psi(2) = 1/2 + 1/3.
  expected = 5 / 6 + math.log(2) + (2 * math.log(3) + math.log(2) + math.log(6)) / 4
  assert dg.kl_entropy(line, k=2) == pytest.approx(expected, rel=1e-6)
  # The unit square's corners (V_2 = pi): every nearest other corner at 1.
  corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  assert dg.kl_entropy(corners) == pytest.approx(11 / 6 + math.log(math.pi), rel=1e-6)
  assert dg.kl_entropy(corners, row_batch=3, col_batch=2) == pytest.approx(
      11 / 6 + math.log(math.pi), rel=1e-6)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_kl_entropy_of_a_standard_normal(d):
  # 0.5 d log(2 pi e). Measured over 12 seeds at n = 20k (k = 1): mean error -0.001 nats
  # (d = 1, 200 seeds, std 0.012), -0.002 (d = 2, std 0.012), -0.025 (d = 5, std 0.018,
  # the estimator's bias growing with d); seed 0 gives +0.034, -0.003, -0.017. 0.1 nats
  # is over 4 of those std from the mean: 7% of the value in d = 1, 3.5% in 2, 1.4% in 5.
  x = np.random.default_rng(0).standard_normal((20_000, d)).astype(np.float32)
  expected = 0.5 * d * math.log(2 * math.pi * math.e)
  assert dg.kl_entropy(x) == pytest.approx(expected, abs=0.1)


def test_kl_entropy_falls_with_copies_and_stays_finite():
  x = np.random.default_rng(0).standard_normal((2000, 2)).astype(np.float32)
  entropies = []
  for share in (0.0, 0.1, 0.5, 1.0):  # share of rows that have an exact copy
    copied = x.copy()
    m = int(share * 1000)
    copied[1000:1000 + m] = copied[:m]
    entropies.append(dg.kl_entropy(copied))
    assert dg.duplicate_share(copied) == pytest.approx(share / 2)
  assert np.all(np.isfinite(entropies)) and np.all(np.diff(entropies) < -2.0), entropies
  assert entropies[0] == pytest.approx(0.5 * 2 * math.log(2 * math.pi * math.e), abs=0.2)
  # All copies of one row: every eps at the floor, the formula with log(floor).
  collapsed = np.repeat(x[:1], 2000, axis=0)
  floor = np.finfo(np.float32).eps * np.abs(x[0]).max()
  expected = (sum(1 / i for i in range(1, 2000)) + math.log(math.pi)
              + 2 * math.log(floor))  # psi(2000) - psi(1) is the harmonic number H_1999
  assert dg.kl_entropy(collapsed) == pytest.approx(expected, rel=1e-6)
  assert dg.kl_entropy(collapsed) < entropies[-1] < entropies[0] - 20
  # Shrinking towards a point lowers it by d log c, with copies too (the floor scales).
  for rows in (x, copied):
    assert dg.kl_entropy(rows * np.float32(0.125)) == pytest.approx(
        dg.kl_entropy(rows) + 2 * math.log(0.125), abs=1e-4)


def test_all_zero_rows_stay_finite():
  assert np.isfinite(dg.kl_entropy(np.zeros((10, 3))))
  assert dg.duplicate_share(np.zeros((10, 3))) == pytest.approx(0.9)


def test_duplicate_share_by_hand():
  assert dg.duplicate_share([[1, 2], [1, 2], [3, 4], [1, 2]]) == 0.5
  assert dg.duplicate_share([[1, 2], [2, 1]]) == 0.0


# ---- tail coverage ------------------------------------------------------------------


def test_tail_coverage_by_hand():
  # Held-out points -3, -1, 0, 1, 3: centre 0, radii 3, 1, 0, 1, 3, median 1, so the tail
  # (radius > 1) is -3 and 3, and each one's ball (k = 1) reaches 2 (to -1 or 1).
  heldout = np.array([[-3.0], [-1.0], [0.0], [1.0], [3.0]])
  # 3 is covered by 2.5 (0.5 <= 2); -3's nearest sample, -0.9, is 2.1 > 2 away.
  result = dg.tail_coverage(heldout, [[2.5], [-0.9], [0.0], [0.0]], quantile=0.5, k=1)
  assert result["tail_rows"] == 2 and result["tail_radius"] == 1.0
  assert result["tail_recall"] == 0.5
  # One sample in four beyond radius 1 (2.5), where half the real mass is.
  assert result["tail_mass_ratio"] == pytest.approx(0.25 / 0.5)
  # At exactly the ball's radius a row counts as covered.
  result = dg.tail_coverage(heldout, [[2.5], [-1.0], [0.0], [0.0]], quantile=0.5, k=1)
  assert result["tail_recall"] == 1.0
  # k = 2: -3's ball reaches 3 (to 0), so -0.9 now covers it.
  result = dg.tail_coverage(heldout, [[2.5], [-0.9], [0.0], [0.0]], quantile=0.5, k=2)
  assert result["tail_recall"] == 1.0
  # Another centre: radii from 3 are 6, 4, 3, 2, 0, the tail above the median 3 is -3, -1.
  result = dg.tail_coverage(heldout, [[-3.0], [3.0]], center=[3.0], quantile=0.5, k=1)
  assert result["tail_rows"] == 2 and result["tail_radius"] == 3.0
  # -3 is copied; -1's ball reaches 1 (to 0), and its nearest sample, -3, is 2 away.
  assert result["tail_recall"] == 0.5
  assert result["tail_mass_ratio"] == pytest.approx(0.5 / 0.5)


def test_tail_coverage_of_a_shrunken_gaussian():
  heldout = np.random.default_rng(1).standard_normal((2000, 2))
  same = dg.tail_coverage(heldout, np.random.default_rng(2).standard_normal((2000, 2)))
  # Measured: recall 0.98 (about 1 - 2^-5 expected), mass ratio 0.94 (100 tail rows).
  assert same["tail_rows"] == 100
  assert same["tail_recall"] > 0.9 and 0.7 < same["tail_mass_ratio"] < 1.3
  # std 0.5: P(radius > 2.46) = exp(-2.46^2 / (2 * 0.25)) ~ 6e-6 per sample.
  narrow = 0.5 * np.random.default_rng(2).standard_normal((2000, 2))
  shrunk = dg.tail_coverage(heldout, narrow)
  assert shrunk["tail_recall"] == 0.0 and shrunk["tail_mass_ratio"] == 0.0


# ---- n-grams ------------------------------------------------------------------------

GENERATED = np.array([[5, 6, 7, 8, 9, 0, 0],
                      [5, 6, 7, 1, 0, 0, 0]])
TRAINING = np.array([[1, 5, 6, 7, 8, 0],
                     [7, 1, 2, 0, 0, 0]])


def test_ngram_shares_by_hand():
  # Trigrams without padding: generated 567, 678, 789 | 567, 671 (five); training
  # 156, 567, 678 | 712. Seen: 567, 678, 567 -> 3 / 5. Distinct: 567, 678, 789, 671
  # -> 4 / 5.
  assert dg.ngram_seen_share(GENERATED, TRAINING, n=3) == pytest.approx(3 / 5)
  assert dg.distinct_ngram_share(GENERATED, n=3) == pytest.approx(4 / 5)
  # Bigrams: 56 67 78 89 | 56 67 71 against 15 56 67 78 | 71 12: all but 89 seen; 5
  # distinct of 7.
  assert dg.ngram_seen_share(GENERATED, TRAINING, n=2) == pytest.approx(6 / 7)
  assert dg.distinct_ngram_share(GENERATED, n=2) == pytest.approx(5 / 7)
  # Without padding the zeros are tokens: five more generated trigrams, 890 900 | 710 100
  # 000, of which only 000 occurs in training (its second row's 000).
  assert dg.ngram_seen_share(GENERATED, TRAINING, n=3, pad_id=None) == pytest.approx(4 / 10)


def test_ngram_masks_and_large_vocabularies():
  # A mask that also hides generated token 9 (and training's 2): same windows but 789.
  gen_mask = (GENERATED != 0) & (GENERATED != 9)
  share = dg.ngram_seen_share(GENERATED, TRAINING, n=3, generated_mask=gen_mask,
                              training_mask=(TRAINING != 0) & (TRAINING != 2))
  assert share == pytest.approx(3 / 4)
  assert dg.distinct_ngram_share(GENERATED, n=3, mask=gen_mask) == pytest.approx(3 / 4)
  # Ids whose vocab^n overflows int64 take the exact np.unique path: same answers.
  big = lambda t: np.where(t != 0, t + 10 ** 7, 0)
  assert dg.ngram_seen_share(big(GENERATED), big(TRAINING), n=3) == pytest.approx(3 / 5)
  assert dg.distinct_ngram_share(big(GENERATED), n=3) == pytest.approx(4 / 5)
  # Rows shorter than n, or all padding: no n-gram to count.
  assert math.isnan(dg.ngram_seen_share(GENERATED, TRAINING, n=8))
  assert math.isnan(dg.distinct_ngram_share(np.zeros((2, 5), int), n=2))
