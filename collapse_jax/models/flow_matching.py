"""OT conditional flow matching on the diffusion core (`processes.FlowMatching`), as Bertrand
et al. use it: the DDPM++ UNet on images, `TimeMLP` on 2-D toys; samples integrate the learned
ODE from ``temperature * N(0, I)`` with ``model.solver``."""
import dataclasses

import jax

from collapse_jax import validate
from collapse_jax.generative import family
from collapse_jax.generative.processes import FlowMatching


def build(config, layout, spec) -> family.Family:
  del layout
  m = config.model
  process = FlowMatching(group=m.batch_size, solver=family.Solver.from_config(m), **{
      f.name: m[f.name] for f in dataclasses.fields(FlowMatching)
      if f.name in m and f.name not in ("group", "solver")})
  # Chunk keys by splitting (DDPM / EDM fold in the index), so that runs' samples stay the same.
  return family.from_config(config, spec, process, chunk_keys=jax.random.split)


RANGES = {
    "sigma_min": validate.Range(0, note="0: no noise around the path"),
    "sinkhorn_eps": validate.POSITIVE,
    "sinkhorn_iters": validate.COUNT,
    "eval_times": validate.COUNT,
}


def check_config(config, spec) -> str | None:
  m = config.model
  return (validate.fields_problem(m, RANGES, "model.") or family.check_network(m, spec)
          or family.check_config(config, spec))
