"""A family outside collapse_jax: an isotropic Gaussian at the data's mean, any row shape."""
import jax
import jax.numpy as jnp


class MeanModel:

  def __init__(self, spec, scale):
    self.field, self.shape, self.scale = spec.data, spec.shape, scale

  def init(self, key, task):
    return {"mean": jnp.zeros(self.shape)}

  def fit(self, state, view, task, key):
    total = view.reduce(lambda rows, c: jnp.tensordot(c.astype(jnp.float32), rows[self.field], 1))
    return {"mean": total / view.size()}

  def sample(self, state, task, key, n):
    return {self.field: state["mean"] + self.scale * jax.random.normal(key, (n,) + self.shape)}

  def evaluate(self, state, task, key):
    return {"test_loss": jnp.mean((task.test[self.field] - state["mean"]) ** 2)}


def build(config, layout, spec):
  return MeanModel(spec, config.model.scale)


def check_config(config, spec):
  return None if config.model.scale > 0 else "model.scale must be positive."
