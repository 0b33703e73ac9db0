"""OT conditional flow matching on the core (`collapse_jax.diffusion`; the maths in
`diffusion.flow`), as Bertrand et al. use it: the DDPM++ UNet on images, `TimeMLP` on 2-D
toys. Samples integrate the learned ODE from ``temperature * N(0, I)`` with ``model.solver``
(euler / heun with ``ode_steps``, or dopri5); ``exact_nll`` adds ``test_nll``, -log p(x) of
that flow on the test set, in nats per example.
"""
from __future__ import annotations

import dataclasses

import jax

from collapse_jax.diffusion import family
from collapse_jax.diffusion.flow import FlowMatching
from collapse_jax.diffusion.ode import Solver


def build(config, layout, spec) -> family.Family:
  del layout
  m = config.model
  process = FlowMatching(group=m.batch_size, solver=Solver.from_config(m), **{
      f.name: m[f.name] for f in dataclasses.fields(FlowMatching)
      if f.name in m and f.name not in ("group", "solver")})
  # One key per chunk by splitting (DDPM / EDM fold in the chunk index): both are kept so
  # every existing run's samples stay bitwise the same.
  return family.from_config(config, spec, process, chunk_keys=jax.random.split)


def check_config(config, spec) -> str | None:
  m = config.model
  if m.get("ot_coupling", True) and not (m.sinkhorn_eps > 0 and m.sinkhorn_iters >= 1):
    return "model.ot_coupling needs model.sinkhorn_eps > 0 and model.sinkhorn_iters >= 1."
  if not (m.get("sigma_min", 0.0) >= 0 and m.get("eval_times", 8) >= 1):
    return "model.eval_times must be positive and model.sigma_min non-negative."
  return family.check_network(m, spec) or family.check_config(config, spec)
