"""Orbax checkpoints of a run: each generation's model, and the loop state to resume from.

    <workdir>/checkpoints/models/<g>   the fitted model state of generation g, all seeds
    <workdir>/checkpoints/loop/<g>     after generation g - 1: the carry (model state, pool,
                                       task, root keys), the metrics so far, the pool layout
    <workdir>/checkpoints/train/<id>   inside a generation trained in segments: the training
                                       state after a segment (id = g * 10**9 + local step)

Loop checkpoints are written at chunk boundaries (the last two kept); model checkpoints
at every generation (all kept: they are the run's product); training checkpoints at segment
boundaries (the last two kept; those of finished generations are deleted).
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


_TRAIN_ID = 10 ** 9  # training checkpoint ids: generation * _TRAIN_ID + local step


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read."""


class RunCheckpoints:

  def __init__(self, workdir: pathlib.Path):
    root = pathlib.Path(workdir).absolute() / "checkpoints"
    self._loop_dir = root / "loop"
    self._loop = ocp.CheckpointManager(
        self._loop_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    self._train_dir = root / "train"
    self._train = ocp.CheckpointManager(
        self._train_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    self._models_dir = root / "models"
    self._models = ocp.CheckpointManager(
        self._models_dir, options=ocp.CheckpointManagerOptions(create=True))

  def latest_loop_step(self) -> int | None:
    """Number of generations finished at the latest loop checkpoint, or None."""
    return self._loop.latest_step()

  def save_model(self, generation: int, state: Any) -> None:
    self._models.save(generation, args=ocp.args.StandardSave(state))

  def save_loop(self, generations_done: int, carry: Any, meta: dict) -> None:
    """Saves the carry after ``generations_done`` generations; ``meta`` is JSON."""
    self._models.wait_until_finished()  # a loop step implies its models are on disk
    self._loop.save(generations_done, args=ocp.args.Composite(
        carry=ocp.args.StandardSave(carry), meta=ocp.args.JsonSave(meta)))
    self._loop.wait_until_finished()

  def restore_meta(self, step: int) -> dict:
    return self._read(step, lambda: self._loop.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def restore_carry(self, step: int, abstract: Any, shardings: Any) -> Any:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    return self._read(step, lambda: self._loop.restore(
        step, args=ocp.args.Composite(carry=ocp.args.StandardRestore(target))).carry)

  def save_train(self, generation: int, local_step: int, state: Any, meta: dict) -> None:
    """Saves a generation's training state after ``local_step`` of its steps."""
    self._train.save(generation * _TRAIN_ID + local_step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self._train.wait_until_finished()

  def latest_train(self, generation: int) -> int | None:
    """The local step of ``generation``'s newest training checkpoint, or None."""
    steps = [s - generation * _TRAIN_ID for s in self._train.all_steps()
             if s // _TRAIN_ID == generation]
    return max(steps) if steps else None

  def restore_train(self, generation: int, local_step: int, abstract: Any, shardings: Any
                    ) -> tuple[Any, dict]:
    step = generation * _TRAIN_ID + local_step
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    out = self._read(step, lambda: self._train.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())), self._train_dir)
    return out.state, out.meta

  def drop_train(self, generation: int) -> None:
    """Deletes ``generation``'s training checkpoints (its model checkpoint is saved)."""
    for s in self._train.all_steps():
      if s // _TRAIN_ID <= generation:
        self._train.delete(s)

  def model_generations(self) -> list[int]:
    """Generations whose model checkpoint is on disk."""
    return sorted(self._models.all_steps())

  def restore_model(self, generation: int, abstract: Any, sharding: Any) -> Any:
    """Generation ``generation``'s model state, shaped like ``abstract``, on ``sharding``."""
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                          abstract)
    return self._read(generation, lambda: self._models.restore(
        generation, args=ocp.args.StandardRestore(target)), self._models_dir)

  def _read(self, step: int, fn, directory: pathlib.Path | None = None):
    try:
      return fn()
    except Exception as e:  # orbax raises many types; the user needs which file and why
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise CheckpointError(
          f"Cannot read the checkpoint {(directory or self._loop_dir) / str(step)} ({reason}); "
          "fix or remove it, or rerun with --overwrite to start over.") from e

  def close(self) -> None:
    self._models.wait_until_finished()
    for manager in (self._loop, self._models, self._train):
      manager.close()
