"""`Family`, every diffusion-like model: a `Process` around a `Network` on the rows of a
`RowSpec`; the ODE `Solver` (flow sampling, exact likelihoods); the shared config checks."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol

import chex
import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax import validate
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.generative.rows import Rows, map_chunks, normal_like, where_valid
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets.mlp import TimeMLP
from collapse_jax.nets.unet import UNet

EVAL_SEED = 0           # default model.eval_seed: PRNGKey(eval_seed) draws the test-loss noise
MAX_EXACT_NLL_DIMS = 16  # numbers per row up to which exact_nll's Jacobian trace is affordable
NETWORKS = {"unet": UNet, "mlp": TimeMLP}
NETWORK_RANKS = {"unet": 3, "mlp": 1}  # of their rows: [h, w, c] images, [d] vectors
SOLVERS = ("euler", "heun", "dopri5")
# The config.model fields of every family on this core (`check_config`).
RANGES = {
    "temperature": validate.POSITIVE,  # scales the prior noise the samples start from
    "inference_batch_size": validate.COUNT,
    "initial_steps": validate.Range(0, integer=True, note="0: as later generations"),
    "eval_seed": validate.SEED,
    "ode_steps": validate.COUNT,
    "rtol": validate.POSITIVE,
    "atol": validate.POSITIVE,
    "ode_max_steps": validate.COUNT,
}
# The networks' settings, in model.<network> (`check_network`).
NETWORK_RANGES = {
    "mlp": {"width": validate.COUNT, "depth": validate.Range(0, integer=True)},
    "unet": {"base_channels": validate.COUNT, "channel_mult": validate.COUNT,
             "num_res_blocks": validate.COUNT, "attn_resolutions": validate.COUNT,
             "dropout": validate.Range(0, 1, high_open=True)},
}
# The discrete-time schedule's fields, for the families on one (DDPM, GeoDiff).
SCHEDULE_RANGES = {
    "num_timesteps": validate.COUNT,
    "sampler_steps": validate.COUNT,
    "beta_start": validate.Range(0, 1, low_open=True, high_open=True),
    "beta_end": validate.Range(0, 1, low_open=True, high_open=True),
}
Net = Callable[[jax.Array, jax.Array, dict, Any], jax.Array]  # net(x_t, t, cond, key or None)


class Network(Protocol):
  """``apply``: the ``[n, ...]`` prediction at ``x [n, ...]``, noise level / time ``t [n]``;
  ``cond``: the rows' aux fields and mask; ``key``: None except in training (dropout)."""
  def init(self, key: jax.Array, x: jax.Array, cond: dict) -> Any: ...
  def apply(self, params, x: jax.Array, t: jax.Array, cond: dict, key) -> jax.Array: ...


class Process(Protocol):
  """``train_loss`` ``[b]`` at levels and noise from ``key``; ``test_loss`` at fixed levels,
  ``chunk`` rows per network call; ``sample``: prior ``noise [b, ...]`` -> samples;
  ``probability_flow``: ``(field(t, y, cond), t_data, t_noise, prior std)``."""
  def train_loss(self, net: Net, x, mask, cond, key) -> jax.Array: ...
  def test_loss(self, net: Net, x, mask, cond, key, chunk: int) -> jax.Array: ...
  def sample(self, net: Net, noise, mask, cond, key) -> jax.Array: ...
  def probability_flow(self, net: Net) -> tuple[Callable, float, float, float]: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
  """How to integrate dy/dt = f(t, y): fixed steps (euler, heun) or adaptive dopri5."""
  name: str = "dopri5"
  steps: int = 100          # euler / heun
  rtol: float = 1e-5        # dopri5
  atol: float = 1e-5
  max_steps: int = 4096     # dopri5: a solve that needs more returns NaN

  @classmethod
  def from_config(cls, m) -> "Solver":
    """From ``model.{solver, ode_steps, rtol, atol, ode_max_steps}``; absent ones default."""
    names = {"name": "solver", "steps": "ode_steps", "rtol": "rtol", "atol": "atol",
             "max_steps": "ode_max_steps"}
    return cls(**{f: m[k] for f, k in names.items() if k in m})

  def integrate(self, field: Callable[[jax.Array, Any], Any], y0: Any, t0: float, t1: float) -> Any:
    """``y(t1)`` for ``y(t0) = y0`` (any pytree); ``field(t, y)`` returns y's structure."""
    if self.name == "dopri5":
      sol = diffrax.diffeqsolve(
          diffrax.ODETerm(lambda t, y, args: field(t, y)), diffrax.Dopri5(), t0, t1, None, y0,
          stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
          saveat=diffrax.SaveAt(t1=True), max_steps=self.max_steps, throw=False)
      # A solve out of steps stopped short of t1: NaN (the run stops there), not a half-way y.
      ok = sol.result == diffrax.RESULTS.successful
      return jax.tree.map(lambda y: jnp.where(ok, y[-1], jnp.nan), sol.ys)
    dt = (t1 - t0) / self.steps
    axpy = lambda a, x, y: jax.tree.map(lambda xi, yi: yi + a * xi, x, y)

    def step(y, i):
      t = t0 + i * dt
      k1 = field(t, y)
      if self.name == "euler":
        return axpy(dt, k1, y), None
      k2 = field(t + dt, axpy(dt, k1, y))
      return axpy(dt / 2, jax.tree.map(jnp.add, k1, k2), y), None

    return jax.lax.scan(step, y0, jnp.arange(self.steps, dtype=jnp.float32))[0]

  def log_likelihood(self, field, x: jax.Array, mask: jax.Array | None, cond: dict,
                     t_data: float, t_noise: float, prior_std: float) -> jax.Array:
    """``[b]`` log p(x) in nats (padding excluded) under the flow ``field(t, y, cond)`` from
    the data at ``t_data`` to N(0, prior_std^2 I) at ``t_noise``: log p_prior(y) + l for
    ``(y, l)`` from ``(x, 0)``, dl/dt = tr(df/dy) (`jax.jacfwd` per row: small rows only)."""
    d = math.prod(x.shape[1:])
    row = lambda a: None if a is None else a[None]

    def trace(xi, mi, ci, t):
      f = lambda z: where_valid(field(t, z[None], jax.tree.map(row, ci)), row(mi))[0]
      return jnp.trace(jax.jacfwd(f)(xi).reshape(d, d))

    aug = lambda t, y: (where_valid(field(t, y[0], cond), mask),
                        jax.vmap(trace, in_axes=(0, 0, 0, None))(y[0], mask, cond, t))
    y, l = self.integrate(aug, (x, jnp.zeros(x.shape[0], x.dtype)), t_data, t_noise)
    axes = tuple(range(1, x.ndim))
    dims = d if mask is None else jnp.sum(where_valid(jnp.ones_like(x), mask), axes)
    return (-0.5 * jnp.sum(where_valid(y, mask) ** 2, axes) / prior_std ** 2
            - 0.5 * dims * jnp.log(2 * jnp.pi * prior_std ** 2)) + l


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlaxNet:
  """A `Network` from a Flax module called ``module(x, t[, train])`` (UNet, TimeMLP)."""
  module: nn.Module

  def init(self, key, x, cond):  # cond: unconditional modules
    return self.module.init(key, x, jnp.zeros((1,), x.dtype))["params"]

  def apply(self, params, x, t, cond, key):
    train = {"train": key is not None} if isinstance(self.module, UNet) else {}
    return self.module.apply({"params": params}, x, t, **train,
                             rngs={} if key is None else {"dropout": key})


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
  solver: Solver = Solver()      # of log_likelihood's probability-flow ODE
  # sample's keys of its chunks: fold_in(key, i) (flow matching: jax.random.split)
  chunk_keys: Callable[[jax.Array, int], jax.Array] = (
      lambda key, num: jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num)))

  def net(self, params, train: bool = False) -> Net:
    """The network as processes call it: the key used only when ``train``; 0 on padding."""
    return lambda x, t, cond, key: where_valid(
        self.network.apply(params, x, t, cond, key if train else None), self.rows.mask_of(cond))

  def init(self, key, task: Task):
    x, _, cond = self.rows.split(jax.tree.map(lambda a: a[:1], task.test))
    return training.init_state(self.network.init(key, x, cond), self.budget)

  def loss(self, params, batch, key) -> jax.Array:
    """``[batch]`` training loss."""
    return self.process.train_loss(self.net(params, train=True), *self.rows.split(batch), key)

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train_generation(state, view, key, self.loss, self.budget, self.initial_budget)

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
    x = x if self.clip is None else jnp.clip(x, -self.clip, self.clip)
    return {self.rows.data: x, **cond}

  def evaluate(self, state, task: Task, key):
    del key  # common random numbers: every generation is scored on the same noise
    x, mask, cond = self.rows.split(task.test)
    net, fixed_key = self.net(state["ema"]), jax.random.PRNGKey(self.eval_seed)
    out = {"test_loss": self.process.test_loss(net, x, mask, cond, fixed_key,
                                               self.inference_batch_size)}
    if self.exact_nll:
      out["test_nll"] = -jnp.mean(self.log_likelihood(state, task, task.test))
    return out

  def log_likelihood(self, state, task: Task, rows, key=None) -> jax.Array:
    """``[n]`` log density in nats of ``rows`` (a batch: data, aux fields, mask) under the
    sampler's probability-flow ODE, its prior scaled by temperature."""
    del task, key
    field, t_data, t_noise, std = self.process.probability_flow(self.net(state["ema"]))
    n, std = rows[self.rows.data].shape[0], self.temperature * std
    return map_chunks(lambda _, r: self.solver.log_likelihood(field, *r, t_data, t_noise, std),
                      self.rows.split(rows), n, self.inference_batch_size)


def from_config(config, spec: RowSpec, process: Process, **fields) -> Family:
  """The `Family` of ``config.model`` around ``process``: the network ``model.network`` with
  its settings in ``model.<network>``, the shared fields; ``fields`` override."""
  m = config.model
  budget = training.Budget.from_config(m)
  net = NETWORKS[m.network](**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                               for k, v in m[m.network].to_dict().items()})
  initial = m.initial_steps
  return Family(
      process=process, network=FlaxNet(module=net), rows=Rows.of(spec), budget=budget,
      initial_budget=dataclasses.replace(budget, steps=initial, epochs=0.0) if initial else None,
      temperature=m.temperature, inference_batch_size=m.inference_batch_size,
      clip=1.0 if m.network == "unet" else None,  # the images source's range
      eval_seed=m.eval_seed, exact_nll=m.exact_nll,
      solver=Solver.from_config(m), **fields)


def check_network(m, spec: RowSpec) -> str | None:
  """One sentence if ``model.network`` cannot run on the source's rows."""
  if m.network not in NETWORKS:
    return f"Unknown network {m.get('network')!r}; choose model.network in {tuple(NETWORKS)}."
  if len(spec.shape) != NETWORK_RANKS[m.network]:
    fits = [k for k, r in NETWORK_RANKS.items() if r == len(spec.shape)]
    return (f"model.network = {m.network!r} takes rows of rank {NETWORK_RANKS[m.network]}, but "
            f"the data field {spec.data!r} has shape {spec.shape}"
            + (f"; use model.network = {fits[0]!r}." if fits else "."))
  if m.network not in m:
    return f"model.network = {m.network!r} needs its settings in model.{m.network}."
  unknown = set(m[m.network]) - {f.name for f in dataclasses.fields(NETWORKS[m.network])}
  if unknown:
    return f"Unknown model.{m.network} settings {sorted(unknown)}."
  return validate.fields_problem(m[m.network], NETWORK_RANGES[m.network], f"model.{m.network}.")


def check_config(config, spec: RowSpec) -> str | None:
  """One sentence if the settings every diffusion family shares are unusable."""
  m = config.model
  if "temperature" not in m or "inference_batch_size" not in m:
    return "A diffusion family needs model.temperature and model.inference_batch_size."
  problem = validate.fields_problem(m, RANGES, "model.")
  if problem:
    return problem
  if m.initial_steps and config.train_from != "previous":
    return ("model.initial_steps (a longer generation 0 that later generations fine-tune) "
            "needs train_from = 'previous'.")
  if m.exact_nll and math.prod(spec.shape) > MAX_EXACT_NLL_DIMS:
    return (f"model.exact_nll computes an exact Jacobian trace (a network pass per number "
            f"in a row); use it on small rows such as 2-D toys, not {spec.shape}.")
  if m.get("solver", Solver.name) not in SOLVERS:
    return f"Unknown ODE solver {m.solver!r}; choose one of {SOLVERS}."
  return training.check_budget(m)
