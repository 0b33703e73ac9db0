"""A family that breaks the pool rule of models/base.py: it averages over every slot of the
pool, so its fit depends on the pool's capacity; collapse_jax.testing.check_family says so."""
import jax.numpy as jnp

from plugins import mean_family


class CapacityMean(mean_family.MeanModel):

  def fit(self, state, view, task, key):
    rows = view.pool.decode(view.pool.data)[self.field]
    counts = view.counts.astype(jnp.float32)
    return {"mean": jnp.tensordot(counts, rows, 1) / counts.shape[0]}


def build(config, layout, spec):
  return CapacityMean(spec, config.model.scale)
