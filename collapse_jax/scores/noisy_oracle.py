"""A verifier of accuracy p (``config.curation.accuracy``): each candidate gets its true log
density (`real_density`) with probability p, and otherwise the true score of another
candidate picked uniformly, so p = 1 is the oracle and p = 0 a verifier that knows nothing
(curation then keeps a uniform subset). Sweeping p is Feng et al.'s verifier-quality axis."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from collapse_jax.scores import real_density


@dataclasses.dataclass(frozen=True)
class NoisyOracle:
  log_density: Any
  accuracy: float

  def __call__(self, state, task, rows, key, pool):
    del state, pool
    true = self.log_density(task, rows)
    k_right, k_other = jax.random.split(key)
    right = jax.random.bernoulli(k_right, self.accuracy, true.shape)
    other = true[jax.random.randint(k_other, true.shape, 0, true.shape[0])]
    return jnp.where(right, true, other)


def build(config, loop) -> NoisyOracle:
  return NoisyOracle(real_density.density(loop).log_density, float(config.curation.accuracy))


upper_bound = real_density.upper_bound
check = real_density.check
