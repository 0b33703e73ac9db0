"""One validation pass over a config, before any compute or any write to the workdir."""
from __future__ import annotations

import math

from collapse_jax.data import source as source_lib
from collapse_jax.evals import base as evals_base
from collapse_jax.loop import policies
from collapse_jax.models import base as model_base
from collapse_jax.parallel import mesh as mesh_lib


class ConfigError(ValueError):
  """A config that cannot run; the message is one sentence for the user."""


def check(config) -> None:
  """Raises `ConfigError` with the first problem found in ``config``."""
  problem = _first_problem(config)
  if problem:
    raise ConfigError(problem)


def _first_problem(config) -> str | None:
  pol = config.policy
  if pol.name not in policies.NAMES:
    return f"Unknown policy {pol.name!r}; choose one of {', '.join(policies.NAMES)}."
  lam = float(pol.mix_lambda)
  if math.isnan(lam) or lam < 0:
    return f"policy.mix_lambda must be >= 0 (or inf for fully synthetic), got {pol.mix_lambda}."
  if config.num_generations < 1:
    return f"num_generations must be at least 1, got {config.num_generations}."
  if config.num_seeds < 1:
    return f"num_seeds must be at least 1, got {config.num_seeds}."
  if config.generations_per_chunk < 0:
    return f"generations_per_chunk must be >= 0 (0: one chunk), got {config.generations_per_chunk}."
  if config.n_real < 1 or config.n_synth < 1:
    return f"n_real and n_synth must be positive, got {config.n_real} and {config.n_synth}."
  if config.get("checkpoint_every_steps", -1) < -1:
    return ("checkpoint_every_steps must be a number of steps, 0 (never) or -1 (by model "
            f"size), got {config.checkpoint_every_steps}.")
  if config.get("sample_chunk_rows", 0) < 0:
    return f"sample_chunk_rows must be >= 0 (0: never chunk), got {config.sample_chunk_rows}."
  if config.get("log_every_steps", 1) < 1:
    return f"log_every_steps must be at least 1, got {config.log_every_steps}."
  if config.train_from not in ("scratch", "previous"):
    return f"train_from must be 'scratch' or 'previous', got {config.train_from!r}."
  problem = mesh_lib.check(config.mesh.data, config.mesh.get("fsdp", 1))
  if problem:
    return problem
  devices = mesh_lib.from_config(config.mesh).size
  if config.get("sample_chunk_rows", 0) % devices:
    return (f"sample_chunk_rows must be a multiple of the mesh's {devices} devices (the "
            f"chunks are split over them), got {config.sample_chunk_rows}.")
  try:
    model = model_base.family(config.model.name)
    data = source_lib.source_module(config.data.source)
  except ValueError as e:
    return str(e)
  problem = getattr(data, "check_config", lambda c: None)(config)
  if problem:
    return problem
  try:  # loads a dataset: a bad path or file is a config problem too
    source = data.build(config.data)
    num_train, spec = source.num_train, source.row_spec
  except ValueError as e:
    return str(e)
  problem = (getattr(model, "check_config", lambda c, s: None)(config, spec)
             or evals_base.check_config(config, spec))
  if problem:
    return problem
  if num_train is not None:
    policy = policy_of(config)
    needed = policy.n_real + config.num_generations * policy.n_fresh
    if needed > num_train:
      return (f"The policy needs {needed} real training rows but the dataset has "
              f"{num_train}; lower n_real or num_generations.")
  return None


def policy_of(config) -> policies.Policy:
  return policies.make_policy(config.policy.name, n_real=config.n_real,
                              n_synth=config.n_synth, mix_lambda=float(config.policy.mix_lambda))
