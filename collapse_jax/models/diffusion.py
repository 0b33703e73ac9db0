"""DDPM (DDIM sampling) and EDM on the diffusion core (`collapse_jax.generative`, where the
maths is): Bertrand et al.'s DDPM++ UNet on images in [-1, 1] or a `TimeMLP` on 2-D toys.
``model.kind`` picks the process; its fields present in ``config.model`` override defaults."""
import dataclasses

from collapse_jax import validate
from collapse_jax.generative import family
from collapse_jax.generative.processes import DDPM, EDM

KINDS = {"ddpm": DDPM, "edm": EDM}
PRECONDS = ("edm", "vp")
SCHEDULES = ("linear", "sigmoid")
RANGES = {
    **family.SCHEDULE_RANGES,
    "eta": validate.Range(0, 1, note="0: deterministic DDIM, 1: ancestral"),
    "sigma_data": validate.POSITIVE,
    "p_mean": validate.Range(),
    "p_std": validate.POSITIVE,
    "sigma_min": validate.POSITIVE,  # the probability flow starts at log(sigma_min)
    "sigma_max": validate.POSITIVE,
    "rho": validate.POSITIVE,
}


def build(config, layout, spec) -> family.Family:
  del layout
  m = config.model
  cls = KINDS[m.kind]
  process = cls(**{f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m})
  return family.from_config(config, spec, process)


def check_config(config, spec) -> str | None:
  m = config.model
  if m.kind not in KINDS:
    return f"Unknown diffusion kind {m.get('kind')!r}; choose one of {tuple(KINDS)}."
  if m.kind == "edm" and m.precond not in PRECONDS:
    return f"Unknown EDM precond {m.get('precond')!r}; choose one of {PRECONDS}."
  if m.kind == "ddpm" and m.beta_schedule not in SCHEDULES:
    return f"Unknown beta schedule {m.beta_schedule!r}; choose one of {SCHEDULES}."
  problem = validate.fields_problem(m, RANGES, "model.")
  if problem:
    return problem
  min_steps = 2 if m.kind == "edm" else 1
  if m.sampler_steps < min_steps:
    return f"model.sampler_steps must be at least {min_steps} for {m.kind}."
  if m.kind == "ddpm" and m.sampler_steps > m.num_timesteps:
    return "model.sampler_steps cannot exceed model.num_timesteps for ddpm."
  if m.kind == "edm" and not m.sigma_min < m.sigma_max:
    return "model.sigma_min must be below model.sigma_max for edm."
  return family.check_network(m, spec) or family.check_config(config, spec)
