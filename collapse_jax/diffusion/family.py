"""The family skeleton every diffusion-like model shares: a `Process` around a `Network` on
the rows of a `RowSpec`, with chunked sampling and evaluation, the initial-budget wiring,
exact likelihoods, and the config checks common to them (see the package docstring)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.data.source import RowSpec, Task
from collapse_jax.diffusion import ode
from collapse_jax.diffusion.rows import Rows, fold_in_keys, map_chunks, normal_like, where_valid
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets.mlp import TimeMLP
from collapse_jax.nets.unet import UNet

EVAL_SEED = 0           # default model.eval_seed: PRNGKey(eval_seed) draws the test-loss noise
MAX_EXACT_NLL_DIMS = 16  # numbers per row up to which exact_nll's Jacobian trace is affordable
NETWORKS = {"unet": UNet, "mlp": TimeMLP}
NETWORK_RANKS = {"unet": 3, "mlp": 1}  # of their rows: [h, w, c] images, [d] vectors

# net(x_t [b, ...], t [b], cond, key or None) -> [b, ...]; 0 on padding.
Net = Callable[[jax.Array, jax.Array, dict, Any], jax.Array]


class Network(Protocol):
  """``apply``: the ``[n, ...]`` prediction at ``x [n, ...]``, noise level / time ``t [n]``;
  ``cond``: the rows' aux fields and mask; ``key``: None except in training (dropout)."""
  def init(self, key: jax.Array, x: jax.Array, cond: dict) -> Any: ...
  def apply(self, params, x: jax.Array, t: jax.Array, cond: dict, key) -> jax.Array: ...


class Process(Protocol):
  """``train_loss``: ``[b]`` loss of rows ``x [b, ...]`` at levels and noise drawn from
  ``key``; ``test_loss``: scalar, at fixed levels, noise from ``key``, ``chunk`` rows per
  network call; ``sample``: prior ``noise [b, ...]`` -> samples (a ``lax.scan``);
  ``probability_flow``: ``(field, t_data, t_noise, prior std)`` of the sampler's ODE."""
  def train_loss(self, net: Net, x, mask, cond, key) -> jax.Array: ...
  def test_loss(self, net: Net, x, mask, cond, key, chunk: int) -> jax.Array: ...
  def sample(self, net: Net, noise, mask, cond, key) -> jax.Array: ...
  def probability_flow(self, net: Net) -> tuple[ode.Field, float, float, float]: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlaxNet:
  """A `Network` from a Flax module called ``module(x, t[, train])`` (UNet, TimeMLP)."""
  module: nn.Module

  def init(self, key, x, cond):  # cond: unconditional modules
    return self.module.init(key, x, jnp.zeros((1,), x.dtype))["params"]

  def apply(self, params, x, t, cond, key):
    if isinstance(self.module, UNet):
      return self.module.apply({"params": params}, x, t, train=key is not None,
                               rngs={} if key is None else {"dropout": key})
    return self.module.apply({"params": params}, x, t)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
  """The GenerativeModel: ``process`` around ``network`` on ``rows``."""
  process: Process
  network: Network
  rows: Rows
  budget: training.Budget
  initial_budget: training.Budget | None = None  # generation 0's, if longer (pretraining)
  temperature: float = 1.0       # scales the prior noise: < 1 is Alemohammad et al.'s bias
  inference_batch_size: int = 500  # rows per network call when sampling / evaluating
  clip: float | None = None      # samples clipped to [-clip, clip] (images: 1)
  eval_seed: int = EVAL_SEED
  exact_nll: bool = False        # evaluate also reports test_nll = -mean log_likelihood
  solver: ode.Solver = ode.Solver()  # of log_likelihood's probability-flow ODE
  chunk_keys: Callable[[jax.Array, int], jax.Array] = fold_in_keys  # sample's key per chunk

  def net(self, params, train: bool = False) -> Net:
    """The network as a `Net`: the key is used only when ``train``; padding output is 0."""
    def apply(x, t, cond, key):
      out = self.network.apply(params, x, t, cond, key if train else None)
      return where_valid(out, self.rows.mask_of(cond))
    return apply

  def init(self, key, task: Task):
    x, _, cond = self.rows.split(jax.tree.map(lambda a: a[:1], task.test))
    return training.init_state(self.network.init(key, x, cond), self.budget)

  def loss(self, params, batch, key) -> jax.Array:
    """``[batch]`` training loss."""
    return self.process.train_loss(self.net(params, train=True), *self.rows.split(batch), key)

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train_generation(state, view, key, self.loss, self.budget,
                                     self.initial_budget)

  def conditions(self, task: Task, key: jax.Array, n: int) -> dict:
    """The aux fields and mask of ``n`` rows to sample: the test rows', cycled."""
    _, _, cond = self.rows.split(task.test)
    return jax.tree.map(lambda a: a[jnp.arange(n) % a.shape[0]], cond)

  def sample(self, state, task: Task, key, n: int):
    shape = task.test[self.rows.data].shape[1:]
    cond = self.conditions(task, key, n)
    net = self.net(state["ema"])
    b = max(1, min(n, self.inference_batch_size))
    keys = self.chunk_keys(key, -(-n // b))

    def chunk(start, c):
      k, mask = keys[start // b], self.rows.mask_of(c)
      noise = self.temperature * normal_like(k, (b,) + shape, mask)
      return self.process.sample(net, noise, mask, c, jax.random.fold_in(k, 1))

    x = map_chunks(chunk, cond, n, b)
    chex.assert_shape(x, (n,) + shape)
    return self.rows.join(x if self.clip is None else jnp.clip(x, -self.clip, self.clip), cond)

  def evaluate(self, state, task: Task, key):
    del key  # common random numbers: every generation is scored on the same noise
    x, mask, cond = self.rows.split(task.test)
    out = {"test_loss": self.process.test_loss(self.net(state["ema"]), x, mask, cond,
                                               jax.random.PRNGKey(self.eval_seed),
                                               self.inference_batch_size)}
    if self.exact_nll:
      out["test_nll"] = -jnp.mean(self.log_likelihood(state, x, cond))
    return out

  def log_likelihood(self, state, x: jax.Array, cond: dict | None = None) -> jax.Array:
    """``[n]`` log density in nats of rows ``x [n, ...]`` (the data field; ``cond``: their
    aux fields and mask) under the sampler's probability-flow ODE, whose prior is the
    process's scaled by ``temperature``: exact divergence, so for small rows."""
    cond = cond or {}
    mask = self.rows.mask_of(cond) if cond else None
    field, t_data, t_noise, std = self.process.probability_flow(self.net(state["ema"]))
    return map_chunks(
        lambda _, r: ode.log_likelihood(field, *r, self.solver, t_data, t_noise,
                                        self.temperature * std),
        (where_valid(x, mask), mask, cond), x.shape[0], self.inference_batch_size)


def from_config(config, spec: RowSpec, process: Process, **fields) -> Family:
  """The `Family` of ``config.model`` (shared fields; the network from ``model.network``
  and its settings in ``model.<network>``) around ``process``; ``fields`` override."""
  m = config.model
  budget = training.Budget.from_config(m)
  if "network" not in fields:
    kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
              for k, v in m[m.network].to_dict().items()}
    fields["network"] = FlaxNet(module=NETWORKS[m.network](**kwargs))
  return Family(**{
      "process": process, "rows": Rows.of(spec), "budget": budget,
      "initial_budget": (dataclasses.replace(budget, steps=m.initial_steps, epochs=0.0)
                         if m.get("initial_steps", 0) else None),
      "temperature": m.temperature, "inference_batch_size": m.inference_batch_size,
      "clip": 1.0 if m.get("network") == "unet" else None,  # the images source's range
      "eval_seed": m.get("eval_seed", EVAL_SEED), "exact_nll": m.get("exact_nll", False),
      "solver": ode.Solver.from_config(m), **fields})


def check_network(m, spec: RowSpec) -> str | None:
  """One sentence if ``model.network`` cannot run on the source's rows."""
  if m.get("network") not in NETWORKS:
    return f"Unknown network {m.get('network')!r}; choose model.network in {tuple(NETWORKS)}."
  rank = NETWORK_RANKS[m.network]
  if len(spec.shape) != rank:
    fits = [k for k, r in NETWORK_RANKS.items() if r == len(spec.shape)]
    return (f"model.network = {m.network!r} takes rows of rank {rank}, but the data field "
            f"{spec.data!r} has shape {spec.shape}"
            + (f"; use model.network = {fits[0]!r}." if fits else "."))
  if m.network not in m:
    return f"model.network = {m.network!r} needs its settings in model.{m.network}."
  unknown = set(m[m.network]) - {f.name for f in dataclasses.fields(NETWORKS[m.network])}
  if unknown:
    return f"Unknown model.{m.network} settings {sorted(unknown)}."
  return None


def check_config(config, spec: RowSpec) -> str | None:
  """One sentence if the settings every diffusion family shares are unusable."""
  m = config.model
  if not (m.get("temperature", 0) > 0 and m.get("inference_batch_size", 0) >= 1):
    return "model.temperature and model.inference_batch_size must be positive."
  if m.get("initial_steps", 0) < 0:
    return f"model.initial_steps must be >= 0 (0: as later generations), got {m.initial_steps}."
  if m.get("initial_steps", 0) and config.train_from != "previous":
    return ("model.initial_steps (a longer generation 0 that later generations fine-tune) "
            "needs train_from = 'previous'.")
  if m.get("exact_nll", False) and math.prod(spec.shape) > MAX_EXACT_NLL_DIMS:
    return (f"model.exact_nll computes an exact Jacobian trace (a network pass per number "
            f"in a row); use it on small rows such as 2-D toys, not {spec.shape}.")
  return ode.Solver.from_config(m).check() or training.check_budget(m)
