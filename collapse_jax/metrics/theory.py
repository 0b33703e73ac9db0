"""Closed-form predictions to draw beside measurements.

Linear regression (Gerstgrasser et al., Theorems 1-2): OLS on a fixed Gaussian design of T
rows and d columns, noise sigma2, isotropic test inputs. Model n = 1, 2, ... (our generation
g = n - 1) has expected test error E||w_hat_n - w*||^2 of
    replace:    sigma2 d / (T - d - 1) * n
    accumulate: sigma2 d / (T - d - 1) * sum_{i=1..n} 1 / i^2
and for the control arms (fresh real labels on the same design: n independent noise draws
of X's rows, so the OLS error is that of one draw over n):
    real_only:  sigma2 d / (T - d - 1)
    more_real:  sigma2 d / (T - d - 1) / n
"""
from __future__ import annotations

import numpy as np


def linreg_test_error(policy: str, generations: np.ndarray, *, sigma2: float, dim: int,
                      num_rows: int) -> np.ndarray | None:
  """Expected test error at 0-based ``generations``; None where no closed form is known."""
  n = np.asarray(generations) + 1
  base = sigma2 * dim / (num_rows - dim - 1)
  if policy in ("replace", "fully_synthetic"):
    return base * n
  if policy == "accumulate":
    return base * np.cumsum(1.0 / np.arange(1, n.max() + 1) ** 2)[n - 1]
  if policy == "real_only":
    return base * np.ones_like(n, dtype=float)
  if policy == "more_real":
    return base / n
  return None


def curves(config, generations: np.ndarray) -> dict[str, np.ndarray]:
  """Theory curves for ``config``'s metrics, keyed ``theory_<metric>`` (may be empty)."""
  if config.model.name != "linreg":
    return {}
  err = linreg_test_error(config.policy.name, generations, sigma2=config.data.sigma2,
                          dim=config.data.dim, num_rows=config.data.num_rows)
  # With isotropic noiseless test points, the expected test MSE equals the test error.
  return {} if err is None else {"theory_test_error": err, "theory_test_mse": err}
