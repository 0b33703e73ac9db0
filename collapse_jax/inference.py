"""A finished (or running) run's product: generation g's model, restored to sample from.

    gen = inference.load_generation("runs/digits/replace", 3)
    rows = inference.sample_generation(gen, 64)
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple

import jax
import ml_collections

from collapse_jax import checkpoint, experiment, host_memory, presets, rng, validate
from collapse_jax.loop.generation import Loop, compiled_loop
from collapse_jax.parallel import mesh as mesh_lib


class Generation(NamedTuple):
  """Generation g's fitted model in a workdir, ready to sample: ``state`` and ``tasks``
  have leaves ``[seeds, ...]``; ``roots`` are the replicates' root keys ``[seeds, 2]``."""
  config: Any
  loop: Loop
  state: Any
  tasks: Any
  roots: jax.Array


def load_generation(workdir: str | pathlib.Path, generation: int) -> Generation:
  """Restores generation ``generation``'s model of the run in ``workdir`` (all seeds)."""
  rng.configure_jax()
  host_memory.reuse_host_temporaries()
  workdir = pathlib.Path(workdir)
  saved = workdir / "config.json"
  if not saved.exists():
    raise FileNotFoundError(f"{workdir} holds no run (no config.json).")
  config = ml_collections.ConfigDict(presets.fill_later_fields(json.loads(saved.read_text())))
  ckpts = checkpoint.RunCheckpoints(workdir)
  done = ckpts.model_generations()
  if generation not in done:
    ckpts.close()
    raise validate.ConfigError(
        f"{workdir} has no model of generation {generation}; it has "
        f"{', '.join(map(str, done)) or 'none yet'}.")
  mesh = mesh_lib.make_mesh(1)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  loop = experiment.build_loop(config, layout)
  consts = loop.source.consts()
  roots = rng.seed_keys(config.seed, config.num_seeds)
  compiled = compiled_loop(loop, mesh, consts, roots)
  ckpts.verify("models", generation, "rerun the generation (remove it and the later ones, "
               "then rerun the training command) to rebuild it.")
  state = ckpts.restore_model(generation, compiled.abstract_carry.state,
                             mesh_lib.replicated(mesh))
  ckpts.close()
  tasks = jax.jit(jax.vmap(lambda r: loop.source.task(consts, rng.stream_key(r, "task"))))(roots)
  return Generation(config, loop, state, tasks, roots)


def sample_generation(gen: Generation, num: int, seed_index: int = 0, key_seed: int = 0):
  """``num`` samples (a batch of rows) from replicate ``seed_index`` of ``gen``'s model, with
  the key stream "user_sample" folded with ``key_seed``."""
  pick = lambda tree: jax.tree.map(lambda x: x[seed_index], tree)
  key = rng.stream_key(gen.roots[seed_index], "user_sample", key_seed)
  draw = jax.jit(lambda s, t, k: gen.loop.model.sample(s, t, k, num))
  return jax.device_get(draw(pick(gen.state), pick(gen.tasks), key))
