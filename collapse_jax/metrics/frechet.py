"""Frechet distance between Gaussians fitted to features (FID when they are Inception's).

Works on any ``[n, d]`` features: Inception pool3 for FID, or a classifier's embedding.
Everything is float64 numpy: the matrix square root of a 2048x2048 covariance loses
several digits in float32.
"""
import numpy as np
import numpy.typing as npt


def feature_statistics(features: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """Mean ``[d]`` and unbiased covariance ``[d, d]`` (float64) of ``[n, d]`` features.

  The unbiased estimate (``n - 1``) is what pytorch-fid and TTUR use, so FIDs compare.
  """
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"features must be [n >= 2, d], got shape {features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD ``[d, d]`` matrix.

  Eigenvalues that rounding pushed below zero are clipped: sample covariances with
  ``n <= d`` are singular, and a negative eigenvalue would make the root complex.
  """
  eigvals, eigvecs = np.linalg.eigh(matrix)
  return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: npt.ArrayLike, sigma1: npt.ArrayLike,
                     mu2: npt.ArrayLike, sigma2: npt.ArrayLike) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); means ``[d]``, covs ``[d, d]``.

  ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``, with the
  trace term taken as ``sum(sqrt(eig(A sigma2 A)))`` for ``A = sigma1^{1/2}``: that matrix
  is similar to ``sigma1 sigma2`` but symmetric PSD, so its eigenvalues are real and
  ``eigh`` is stable where ``scipy.linalg.sqrtm`` of the non-symmetric product can return
  complex or inaccurate roots on near-singular covariances.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(f"means must both be [d], got {mu1.shape} and {mu2.shape}")
  if sigma1.shape != (mu1.size, mu1.size) or sigma2.shape != sigma1.shape:
    raise ValueError(f"covariances must both be [{mu1.size}, {mu1.size}],"
                     f" got {sigma1.shape} and {sigma2.shape}")
  # Samples of a diverged model give non-finite statistics (or ones whose product
  # overflows): nan, which the driver names as a non-finite metric, where LAPACK would fail.
  if not all(np.isfinite(x).all() for x in (mu1, mu2, sigma1, sigma2)):
    return float("nan")
  sqrt_sigma1 = _sqrt_psd(sigma1)
  with np.errstate(over="ignore", invalid="ignore"):  # an overflow is answered just below
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
  if not np.isfinite(product).all():
    return float("nan")
  # Symmetrise: the product is symmetric in exact arithmetic, eigvalsh assumes it is.
  product_eigvals = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sqrt(np.clip(product_eigvals, 0.0, None)).sum()
  distance = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
              - 2.0 * trace_sqrt)
  # A squared distance; only rounding (at ~1e-12 of the traces) can make it negative.
  return float(max(distance, 0.0))
