"""The optax training loop shared by the neural families, as a pure function.

State is a plain pytree ``{"params", "opt", "ema", "step"}``. A generation trains for a
budget of ``steps`` or of ``epochs`` of the current view (accumulate's view grows, so its
step count does too); minibatches are drawn from the view on device, with replacement, by
`TrainView.draw`. Keys fold in the global step, so a resumed run draws the same batches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from collapse_jax.loop.pool import TrainView

# loss_fn(params, batch, key) -> per-example losses [batch]; the loop reduces them.
LossFn = Callable[[Any, Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
  batch_size: int
  steps: int = 0        # fixed steps per generation, or
  epochs: float = 0.0   # epochs of the generation's training view
  learning_rate: float = 2e-4
  ema_decay: float = 0.999
  grad_clip: float = 1.0

  @classmethod
  def from_config(cls, model) -> "Budget":
    return cls(batch_size=model.batch_size, steps=model.get("steps", 0),
               epochs=model.get("epochs", 0.0), learning_rate=model.learning_rate,
               ema_decay=model.ema_decay, grad_clip=model.get("grad_clip", 1.0))

  def optimizer(self) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(self.grad_clip), optax.adam(self.learning_rate))

  def num_steps(self, view: TrainView) -> jax.Array:
    if self.steps:
      return jnp.int32(self.steps)
    return jnp.ceil(self.epochs * view.size() / self.batch_size).astype(jnp.int32)


def init_state(params, budget: Budget) -> dict:
  return {"params": params, "opt": budget.optimizer().init(params), "ema": params,
          "step": jnp.zeros((), jnp.int32)}


def train(state: dict, view: TrainView, key: jax.Array, loss_fn: LossFn,
          budget: Budget) -> dict:
  """Runs the generation's budget of Adam steps on minibatches of ``view``."""
  opt = budget.optimizer()

  def one_step(_, s):
    k = jax.random.fold_in(key, s["step"])
    k_batch, k_loss = jax.random.split(k)
    batch = view.gather(view.draw(k_batch, budget.batch_size))
    grads = jax.grad(lambda p: jnp.mean(loss_fn(p, batch, k_loss)))(s["params"])
    updates, opt_state = opt.update(grads, s["opt"], s["params"])
    params = optax.apply_updates(s["params"], updates)
    # EMA warm-up (decay grows from 0.1 to ema_decay): a generation trained from
    # scratch is far shorter than the 1 / (1 - decay) steps a plain EMA needs.
    decay = jnp.minimum(budget.ema_decay, (1.0 + s["step"]) / (10.0 + s["step"]))
    ema = optax.incremental_update(params, s["ema"], 1 - decay)
    return {"params": params, "opt": opt_state, "ema": ema, "step": s["step"] + 1}

  return jax.lax.fori_loop(0, budget.num_steps(view), one_step, state)


def train_generation(state: dict, view: TrainView, key: jax.Array, loss_fn: LossFn,
                     budget: Budget, initial_budget: Budget | None = None) -> dict:
  """One generation's training: ``initial_budget`` at generation 0 when given.

  Bertrand et al. fine-tune models that were already fully trained, so generation 0 of a
  ``train_from="previous"`` run trains for much longer than each later generation.
  """
  run = lambda b: lambda s: train(s, view, key, loss_fn, b)
  if initial_budget is None:
    return run(budget)(state)
  # view.generation is the same for every seed, so this stays a branch under vmap.
  return jax.lax.cond(view.generation == 0, run(initial_budget), run(budget), state)


def check_budget(model) -> str | None:
  """One sentence if ``model``'s training budget is unusable, else None."""
  if bool(model.get("steps", 0)) == bool(model.get("epochs", 0.0)):
    return "Give the training budget as exactly one of model.steps or model.epochs (> 0)."
  if model.get("steps", 0) < 0 or model.get("epochs", 0.0) < 0 or model.batch_size < 1:
    return "model.steps, model.epochs and model.batch_size must be positive."
  return None
