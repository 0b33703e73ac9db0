"""A family trained by the shared loop whose loss turns non-finite after ~5 Adam steps
(lr 1 walks w from 0 past 5, where log(5 - w) is undefined)."""
import jax.numpy as jnp

from collapse_jax.models import training


class Diverging:

  def __init__(self, field):
    self.field = field
    self.budget = training.Budget(batch_size=4, steps=40, learning_rate=1.0, grad_clip=1e6)

  def loss(self, params, batch, key):
    w = params["w"]
    return (w - 10.0) ** 2 - jnp.log(5.0 - w) + 0 * batch[self.field].sum(-1)

  def init(self, key, task):
    return training.init_state({"w": jnp.zeros(())}, self.budget)

  def fit(self, state, view, task, key):
    return training.train(state, view, key, self.loss, self.budget)

  def sample(self, state, task, key, n):
    return {self.field: jnp.zeros((n, 2)) + state["params"]["w"]}

  def evaluate(self, state, task, key):
    return {"test_loss": state["params"]["w"]}


def build(config, layout, spec):
  return Diverging(spec.data)
