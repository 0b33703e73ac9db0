"""Two-sample distances between point clouds, and mode statistics of mixture toys.

Pure NumPy (float64) on host arrays ``[n, d]`` (low d: the 2-D toys); every function is
deterministic and cheap for a few thousand points.

  energy_distance     Szekely & Rizzo's sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|), Euclidean norm,
                      V-statistics (the energy distance of the two empirical measures, so
                      >= 0 and, like scipy.stats.energy_distance in 1-D, 0 only for equal
                      clouds).
  sliced_wasserstein  sqrt(mean_k W2^2(<x, theta_k>, <y, theta_k>)) over fixed unit
                      directions theta_k; each 1-D W2 is exact for the two empirical
                      measures, also for unequal sizes.
  mode_stats          for an equal-weight isotropic mixture (centres, std): how many modes
                      hold at least ``min_fraction`` of their expected share of the samples
                      within 3 std, and the fraction of samples farther than 3 std from
                      every centre.

Both distances are biased upwards at finite sample size: two samples of ONE distribution
give a positive value that shrinks like n^-1/2. Compare a model's value with the value of
two real samples of the same sizes (the noise floor; evals/samples2d.py reports both).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

_PAIRS = 1 << 20  # pairs per block of a pairwise distance matrix (~ 16 MB of differences)


def _as_points(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"Expected a non-empty point cloud [n, d], got shape {x.shape}.")
  return x


def mean_pairwise_distance(x, y) -> float:
  """``mean_{i, j} |x_i - y_j|`` of ``x [n, d]``, ``y [m, d]`` (includes i == j when x is y)."""
  x, y = _as_points(x), _as_points(y)
  total, block = 0.0, max(1, _PAIRS // len(y))
  for i in range(0, len(x), block):
    diff = x[i:i + block, None, :] - y[None, :, :]
    total += np.sqrt(np.sum(diff * diff, -1)).sum()
  return total / (len(x) * len(y))


def energy_distance(x, y) -> float:
  """Energy distance of ``x [n, d]`` and ``y [m, d]`` (V-statistics; >= 0)."""
  squared = (2 * mean_pairwise_distance(x, y) - mean_pairwise_distance(x, x)
             - mean_pairwise_distance(y, y))
  return float(np.sqrt(max(squared, 0.0)))  # >= 0 up to rounding


def random_directions(num: int, dim: int, seed: int = 0) -> np.ndarray:
  """``[num, dim]`` unit vectors, uniform on the sphere, fixed by ``seed`` (NumPy PCG64:
  the same on every platform and version)."""
  v = np.random.default_rng(seed).standard_normal((num, dim))
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def _w2_squared_1d(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """Squared W2 per row of sorted ``xs [k, n]`` and ``ys [k, m]``: the integral over u of
  the squared difference of the two quantile functions, which are piecewise constant
  between the breakpoints i/n and j/m."""
  n, m = xs.shape[1], ys.shape[1]
  u = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
  width = np.diff(u, prepend=0.0)
  mid = u - width / 2
  qx = xs[:, np.minimum((mid * n).astype(np.int64), n - 1)]
  qy = ys[:, np.minimum((mid * m).astype(np.int64), m - 1)]
  return ((qx - qy) ** 2) @ width


def sliced_wasserstein(x, y, directions: np.ndarray) -> float:
  """Sliced W2 of ``x [n, d]`` and ``y [m, d]`` over ``directions [k, d]`` (unit rows)."""
  x, y = _as_points(x), _as_points(y)
  xs = np.sort(directions @ x.T, axis=1)
  ys = np.sort(directions @ y.T, axis=1)
  return float(np.sqrt(np.mean(_w2_squared_1d(xs, ys))))


class ModeStats(NamedTuple):
  covered: int            # modes with enough samples within 3 std
  far_fraction: float     # samples farther than 3 std from every centre
  counts: np.ndarray      # [k] samples within 3 std of each centre


def mode_stats(x, centres, std: float, min_fraction: float = 0.2) -> ModeStats:
  """Mode coverage of ``x [n, 2]`` against an equal-weight mixture of ``k`` isotropic
  Gaussians at ``centres [k, d]`` with per-coordinate ``std``.

  A sample belongs to mode j when it lies within 3 std (Euclidean) of centre j (the modes
  of our toys are farther apart than 6 std, so at most one). Mode j is covered when it
  holds at least ``min_fraction * n / k`` samples: ``min_fraction`` of its share under the
  real mixture (in 2-D, 98.9% of a mode's mass lies within 3 std).
  """
  x, centres = _as_points(x), _as_points(centres)
  dist = np.sqrt(np.sum((x[:, None, :] - centres[None]) ** 2, -1))  # [n, k]
  near = dist <= 3 * std
  counts = near.sum(0)
  covered = int(np.sum(counts >= min_fraction * len(x) / len(centres)))
  return ModeStats(covered=covered, far_fraction=float(np.mean(~near.any(1))), counts=counts)


def mixture_density(points, centres, std: float) -> np.ndarray:
  """``[m]`` density at ``points [m, d]`` of the equal-weight isotropic mixture."""
  points, centres = _as_points(points), _as_points(centres)
  sq = np.sum((points[:, None, :] - centres[None]) ** 2, -1)
  d = points.shape[1]
  return np.mean(np.exp(-sq / (2 * std ** 2)), 1) / (2 * np.pi * std ** 2) ** (d / 2)


def kde_density(points, data, bandwidth: float | None = None) -> np.ndarray:
  """``[m]`` Gaussian KDE of ``data [n, d]`` at ``points [m, d]``; bandwidth: Scott's rule
  on the mean per-coordinate std unless given."""
  points, data = _as_points(points), _as_points(data)
  n, d = data.shape
  h = bandwidth or float(np.mean(data.std(0, ddof=1))) * n ** (-1 / (d + 4))
  out, block = np.zeros(len(points)), max(1, _PAIRS // n)
  for i in range(0, len(points), block):
    sq = np.sum((points[i:i + block, None, :] - data[None]) ** 2, -1)
    out[i:i + block] = np.mean(np.exp(-sq / (2 * h * h)), 1)
  return out / (2 * np.pi * h * h) ** (d / 2)
