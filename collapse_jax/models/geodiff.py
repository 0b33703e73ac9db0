"""GeoDiff (Xu et al., ICLR 2022): diffusion over 3-D conformers given the molecular graph
(``config.model.name = "geodiff"``), a `family.Family` of the diffusion core
(collapse_jax/generative) around GeoDiff's process (`GeoDiffProcess`,
generative/geodiff_process.py: objective, test losses, Langevin sampler) and the dual
encoder (nets/dual_encoder.py) as the core's network (`GeoDiffNet`).

Rows are padded molecules (data/molecules.py): ``pos [A, 3]`` is generated, ``atom_mask [A]``
marks real atoms; ``atom_type``, ``edge_type`` and ``mol_id`` condition the network (the
core's ``cond``) and are copied into samples. Padding gets no noise, loss or weight.

``evaluate`` gives the process's test losses (``test_loss``, the local term, the one
Gerstgrasser et al. plot; ``test_loss_global``; ``test_loss_{small,mid,large}_noise``) per
real atom of the held-out conformers (``task.test``), with noise from the family's fixed key:
every generation is scored on the same noisy inputs. ``sample`` draws conformers for the
training molecules (``task.aux["graphs"]``), each ``n / M`` times (the remainder by a key
permutation).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from collapse_jax import validate
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.generative import family
from collapse_jax.generative.geodiff_process import GeoDiffProcess
from collapse_jax.generative.processes import DDPM
from collapse_jax.generative.rows import Rows
from collapse_jax.models import training
from collapse_jax.nets.dual_encoder import DualEncoder

GRAPH_FIELDS = ("atom_type", "edge_type", "mol_id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeoDiffNet:
  """The dual encoder as a core `family.Network`: ``apply(params, x [n, A, 3], t, cond,
  key) -> [n, A, 3, 2]`` (local, global) per-atom vectors. Like GeoDiff's network it ignores
  ``t``: the noisy distances carry the noise level."""
  module: DualEncoder

  def init(self, key, x, cond):
    return self.module.init(key, x, cond["atom_type"], cond["edge_type"],
                            cond["atom_mask"])["params"]

  def apply(self, params, x, t, cond, key):
    del t, key
    vectors = self.module.apply({"params": params}, x, cond["atom_type"], cond["edge_type"],
                                cond["atom_mask"], method=DualEncoder.vectors)
    return jnp.stack(vectors, -1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeoDiff(family.Family):
  """The core's Family, sampling for the training molecules and reporting both loss terms."""

  def conditions(self, task: Task, key: jax.Array, n: int) -> dict:
    """Graphs of the training molecules (``task.aux["graphs"]``), each n / M times."""
    graphs = task.aux["graphs"]
    m = graphs[self.rows.mask].shape[0]
    pick = jax.random.permutation(jax.random.fold_in(key, 7), m)[jnp.arange(n) % m]
    return {k: graphs[k][pick] for k in self.rows.aux + (self.rows.mask,)}

  def evaluate(self, state, task: Task, key):
    del key  # common random numbers: every generation is scored on the same noise
    x, mask, cond = self.rows.split(task.test)
    return self.process.test_losses(self.net(state["ema"]), x, mask, cond,
                                    jax.random.PRNGKey(self.eval_seed), self.inference_batch_size)

  def loss_by_noise(self, params, task: Task, ts) -> jax.Array:
    """``[len(ts)]`` local test loss at each time step of ``ts``, on fixed noise from
    `evaluate`'s key, of the network with ``params`` (``None``: of predicting no vectors,
    the floor)."""
    x, mask, cond = self.rows.split(task.test)
    net = (self.net(params) if params is not None
           else lambda x_t, t, c, k: jnp.zeros(x_t.shape + (2,), x_t.dtype))
    return self.process.local_loss_by_step(net, x, mask, cond, ts,
                                           jax.random.PRNGKey(self.eval_seed),
                                           self.inference_batch_size)


NO_CLIP = "no clipping"
RANGES = {
    **family.SCHEDULE_RANGES,
    "hidden_dim": validate.Range(2, integer=True),
    "num_convs": validate.Range(0, integer=True),
    "num_convs_local": validate.Range(0, integer=True),
    "cutoff": validate.POSITIVE,
    "step_lr": validate.POSITIVE,
    "w_global": validate.NON_NEGATIVE,
    "global_start_sigma": validate.Range(0, inf="global vectors from the first step"),
    "clip": validate.Range(0, low_open=True, inf=NO_CLIP),
    "clip_local": validate.Range(0, low_open=True, inf=NO_CLIP),
    "eval_repeats": validate.COUNT,
}
PROCESS_FIELDS = ("sampler_steps", "step_lr", "w_global", "global_start_sigma", "clip",
                  "clip_local", "eval_repeats")


def build(config, layout, spec: RowSpec) -> GeoDiff:
  del layout
  m = config.model
  schedule = DDPM(num_timesteps=m.num_timesteps, beta_schedule="sigmoid",
                  beta_start=m.beta_start, beta_end=m.beta_end)
  process = GeoDiffProcess(schedule=schedule, cutoff=m.cutoff,
                           **{f: m[f] for f in PROCESS_FIELDS if f in m})
  net = GeoDiffNet(module=DualEncoder(hidden=m.hidden_dim, num_convs=m.num_convs,
                                      num_convs_local=m.num_convs_local, cutoff=m.cutoff,
                                      smooth=m.smooth_conv))
  budget = training.Budget.from_config(m)
  return GeoDiff(
      process=process, network=net, rows=Rows.of(spec), budget=budget,
      initial_budget=(dataclasses.replace(budget, steps=m.initial_steps, epochs=0.0)
                      if m.initial_steps else None),
      inference_batch_size=m.inference_batch_size, eval_seed=m.eval_seed)


def check_config(config, spec: RowSpec) -> str | None:
  m = config.model
  if spec.mask is None or spec.shape[-1:] != (3,) or not set(GRAPH_FIELDS) <= set(spec.fields):
    return ("The geodiff model needs molecule rows (data.source = 'molecules': "
            "positions [A, 3], an atom mask, atom_type, edge_type and mol_id).")
  missing = [f for f in ("hidden_dim", "num_convs", "num_convs_local", "cutoff") if f not in m]
  if missing:
    return f"The geodiff model needs model.{', model.'.join(missing)}."
  problem = validate.fields_problem(m, RANGES, "model.")
  if problem:
    return problem
  if not 1 <= m.sampler_steps <= m.num_timesteps:
    return "model.sampler_steps must be in [1, model.num_timesteps]."
  if m.num_timesteps > 100 * m.sampler_steps:
    # Each strided Langevin step moves 0.01 * stride of the way to the denoised guess.
    return ("model.sampler_steps must be at least num_timesteps / 100: longer strides "
            "overshoot the Langevin step.")
  if not 0 < m.beta_start < m.beta_end < 1:
    return "model.beta_start and model.beta_end must satisfy 0 < start < end < 1."
  if m.exact_nll:
    return "model.exact_nll is not available for geodiff (no probability flow)."
  return family.check_config(config, spec)
