"""A policy outside collapse_jax: the real set plus the two newest synthetic generations, a
sliding window between replace (one) and accumulate (all)."""
import jax.numpy as jnp

from collapse_jax.loop.policies import Policy

WINDOW = 2


def _counts(pool, g, key):
  del key
  synthetic = pool.generation >= 1  # padding rows are generation -1, the real set 0
  recent = synthetic & (pool.generation > g - WINDOW) & (pool.generation <= g)
  return ((pool.generation == 0) | recent).astype(jnp.int32)


def build(*, n_real, n_synth, mix_lambda):
  del mix_lambda
  return Policy(name=__name__, n_real=n_real, n_synth=n_synth, n_fresh=0, keeps_all=True,
                counts=_counts)
