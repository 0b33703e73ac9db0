"""The optax training loop shared by the neural families, as a pure function.

State is a plain pytree ``{"params", "opt", "ema", "step"}``. A generation trains for a
budget of ``steps`` or of ``epochs`` of the current view (accumulate's view grows, so its
step count does too); minibatches are drawn from the view on device, with replacement, by
`TrainView.draw`. Keys fold in the global step, so a resumed run draws the same batches.

The optimizer comes from the config: gradient clipping, then Adam (the default) or AdamW,
with a constant learning rate or a linear warm-up and cosine decay over the generation.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import optax

from collapse_jax import validate
from collapse_jax.loop.pool import TrainView

# loss_fn(params, batch, key) -> per-example losses [batch], averaged uniformly; or a pair
# (sum, weight) of scalars, minimised as sum / weight (token-weighted cross-entropy: the
# sum over non-pad tokens and their count).
LossFn = Callable[[Any, Any, jax.Array], jax.Array | tuple[jax.Array, jax.Array]]

class Trained(Protocol):
  """A family trained by this loop: ``fit`` is `train_generation` of ``loss`` with
  ``budget`` (``initial_budget`` at generation 0 when not None). The driver may then run a
  generation in segments (`train_segment`) with checkpoints between them."""
  budget: "Budget"
  initial_budget: "Budget | None"

  def loss(self, params, batch, key) -> jax.Array | tuple[jax.Array, jax.Array]: ...


OPTIMIZERS = ("adam", "adamw")
DTYPES = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")


def mean_loss(out: jax.Array | tuple[jax.Array, jax.Array]) -> jax.Array:
  """The scalar a `LossFn`'s output stands for."""
  if isinstance(out, tuple):
    total, weight = out
    return total / jnp.maximum(weight, 1e-12)
  return jnp.mean(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
  batch_size: int
  steps: int = 0        # fixed steps per generation, or
  epochs: float = 0.0   # epochs of the generation's training view
  learning_rate: float = 2e-4
  ema_decay: float = 0.999
  grad_clip: float = 1.0
  optimizer_name: str = "adam"     # "adam" or "adamw"
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0        # adamw only
  schedule: str = "constant"       # "constant" or "cosine" (to 0 over a generation's steps)
  warmup_steps: int = 0            # linear warm-up from 0 before the schedule
  dtype: str = "float32"           # compute dtype of the loss and its gradient ("bfloat16":
                                   # mixed precision, float32 master weights and Adam state)

  @classmethod
  def from_config(cls, model) -> "Budget":
    """The budget config.model states (every field: `check_budget` refuses a missing one)."""
    return cls(**{f.name: model[_CONFIG_NAMES.get(f.name, f.name)]
                  for f in dataclasses.fields(cls)})

  def learning_rate_at(self, step: jax.Array, total: jax.Array) -> jax.Array:
    """The learning rate at ``step`` (counted within the generation) of ``total`` steps."""
    step = step.astype(jnp.float32)
    warm = jnp.maximum(self.warmup_steps, 1)
    factor = jnp.where(step < self.warmup_steps, (step + 1) / warm, 1.0)
    if self.schedule == "cosine":
      span = jnp.maximum(total - self.warmup_steps, 1).astype(jnp.float32)
      done = jnp.clip((step - self.warmup_steps) / span, 0.0, 1.0)
      factor = factor * 0.5 * (1 + jnp.cos(jnp.pi * done))
    return self.learning_rate * factor

  def optimizer(self) -> optax.GradientTransformation:
    """Clip + Adam(W). A schedule scales the updates by ``learning_rate_at / learning_rate``
    in `train`, so the optimizer state never depends on the generation's length."""
    if self.optimizer_name == "adamw":
      opt = optax.adamw(self.learning_rate, b1=self.b1, b2=self.b2,
                        weight_decay=self.weight_decay)
    else:
      opt = optax.adam(self.learning_rate, b1=self.b1, b2=self.b2)
    return optax.chain(optax.clip_by_global_norm(self.grad_clip), opt)

  def num_steps(self, view: TrainView) -> jax.Array:
    if self.steps:
      return jnp.int32(self.steps)
    return jnp.ceil(self.epochs * view.size() / self.batch_size).astype(jnp.int32)


def init_state(params, budget: Budget) -> dict:
  return {"params": params, "opt": budget.optimizer().init(params), "ema": params,
          "step": jnp.zeros((), jnp.int32)}


def _cast_floats(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _step_fn(view: TrainView, key: jax.Array, loss_fn: LossFn, budget: Budget,
             first_step: jax.Array, total: jax.Array):
  """One optimizer step ``state -> (state, loss)``; keys fold in the global step, and the
  schedule counts from ``first_step``, the step the generation started at."""
  opt = budget.optimizer()
  compute_loss = loss_fn
  if budget.dtype != "float32":
    dtype = jnp.dtype(budget.dtype)

    def compute_loss(params, batch, k):
      # Mixed precision: the forward and backward pass in ``dtype`` on copies of the float32
      # master weights (the cast's gradient brings the update back to float32).
      out = loss_fn(_cast_floats(params, dtype), _cast_floats(batch, dtype), k)
      return jax.tree.map(lambda v: v.astype(jnp.float32), out)

  def one_step(s):
    k = jax.random.fold_in(key, s["step"])
    k_batch, k_loss = jax.random.split(k)
    batch = view.gather(view.draw(k_batch, budget.batch_size))
    loss, grads = jax.value_and_grad(lambda p: mean_loss(compute_loss(p, batch, k_loss)))(
        s["params"])
    updates, opt_state = opt.update(grads, s["opt"], s["params"])
    if budget.schedule != "constant" or budget.warmup_steps > 0:
      # Adam(W)'s update is linear in the learning rate, so scaling it is the schedule.
      scale = budget.learning_rate_at(s["step"] - first_step, total) / budget.learning_rate
      updates = jax.tree.map(lambda u: u * scale, updates)
    params = optax.apply_updates(s["params"], updates)
    # EMA warm-up (decay grows from 0.1 to ema_decay): a generation trained from
    # scratch is far shorter than the 1 / (1 - decay) steps a plain EMA needs.
    decay = jnp.minimum(budget.ema_decay, (1.0 + s["step"]) / (10.0 + s["step"]))
    ema = optax.incremental_update(params, s["ema"], 1 - decay)
    return {"params": params, "opt": opt_state, "ema": ema, "step": s["step"] + 1}, loss

  return one_step


def train(state: dict, view: TrainView, key: jax.Array, loss_fn: LossFn,
          budget: Budget) -> dict:
  """Runs the generation's budget of optimizer steps on minibatches of ``view``."""
  total = budget.num_steps(view)
  one_step = _step_fn(view, key, loss_fn, budget, state["step"], total)
  return jax.lax.fori_loop(0, total, lambda _, s: one_step(s)[0], state)


def train_segment(state: dict, view: TrainView, key: jax.Array, loss_fn: LossFn,
                  budget: Budget, first_step: jax.Array, stop: jax.Array, length: int
                  ) -> tuple[dict, jax.Array]:
  """The steps of one segment of a generation trained in segments.

  Runs from the generation-local step ``state["step"] - first_step`` up to ``stop``
  (capped at the generation's budget); the same steps, keys and schedule as `train`, so a
  generation trained in any segments ends in the same state. Returns the state and the
  segment's per-step losses ``[length]`` (``length`` >= the segment's steps; zeros after).
  """
  total = budget.num_steps(view)
  one_step = _step_fn(view, key, loss_fn, budget, first_step, total)
  lo = state["step"] - first_step

  def body(i, carry):
    s, losses = carry
    s, loss = one_step(s)
    return s, losses.at[i - lo].set(loss)

  return jax.lax.fori_loop(lo, jnp.minimum(stop, total), body,
                           (state, jnp.zeros((length,), jnp.float32)))


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


# config.model's names of the `Budget` fields that differ from the dataclass's.
_CONFIG_NAMES = {"optimizer_name": "optimizer", "schedule": "lr_schedule"}


def budget_fields(**fields) -> dict:
  """config.model's training fields: every `Budget` field under its config name, at the
  dataclass's default unless given in ``fields`` (``batch_size`` has none): the one place
  these defaults live, so that every config states them all."""
  out = {_CONFIG_NAMES.get(f.name, f.name): f.default for f in dataclasses.fields(Budget)
         if f.default is not dataclasses.MISSING}
  unknown = set(fields) - set(out) - {"batch_size"}
  if unknown:
    raise TypeError(f"Not training fields: {', '.join(sorted(unknown))}.")
  return out | fields


# The `Budget` fields of config.model.
RANGES = {
    "batch_size": validate.COUNT,
    "steps": validate.Range(0, integer=True, note="0: train by epochs"),
    "epochs": validate.Range(0, note="0: train by steps"),
    "learning_rate": validate.POSITIVE,  # a negative rate climbs the loss
    "ema_decay": validate.Range(0, 1, high_open=True, note="0: no averaging"),
    # 0 would zero every update; inf never clips.
    "grad_clip": validate.Range(0, low_open=True, inf="no clipping"),
    "b1": validate.Range(0, 1, high_open=True),
    "b2": validate.Range(0, 1, high_open=True),
    "weight_decay": validate.NON_NEGATIVE,
    "warmup_steps": validate.Range(0, integer=True),
}


def check_budget(model) -> str | None:
  """One sentence if ``model``'s training budget is unusable, else None."""
  missing = [_CONFIG_NAMES.get(f.name, f.name) for f in dataclasses.fields(Budget)
             if _CONFIG_NAMES.get(f.name, f.name) not in model]
  if missing:
    return (f"config.model has no training field {', '.join(missing)}; a config states "
            "them all (collapse_jax.presets.training gives each its default).")
  problem = validate.fields_problem(model, RANGES, "model.")
  if problem:
    return problem
  if bool(model.steps) == bool(model.epochs):
    return "Give the training budget as exactly one of model.steps or model.epochs (> 0)."
  if model.optimizer not in OPTIMIZERS:
    return f"Unknown optimizer {model.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
  if model.lr_schedule not in SCHEDULES:
    return (f"Unknown learning-rate schedule {model.lr_schedule!r}; choose one of "
            f"{', '.join(SCHEDULES)}.")
  if model.dtype not in DTYPES:
    return f"Unknown model.dtype {model.dtype!r}; choose one of {', '.join(DTYPES)}."
  return None
