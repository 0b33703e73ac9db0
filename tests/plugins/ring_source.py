"""A source outside collapse_jax: points on a noisy circle of radius 3, rows {"p": [2]}."""
import jax
import jax.numpy as jnp

from collapse_jax.data.source import RowSpec, Task


def _ring(key, n):
  ka, kn = jax.random.split(key)
  angle = 2 * jnp.pi * jax.random.uniform(ka, (n,))
  return {"p": 3 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], 1)
               + 0.1 * jax.random.normal(kn, (n, 2))}


class RingSource:
  num_train = None
  row_spec = RowSpec(fields={"p": ((2,), "float32")}, data="p")

  def consts(self):
    return ()

  def task(self, consts, key):
    return Task(test=_ring(key, 64), aux={})

  def real(self, consts, task, key, block, n):
    return _ring(key, n)


def build(data):
  return RingSource()
