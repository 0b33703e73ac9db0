"""Orbax checkpoints of a run: each generation's model, and the loop state to resume from.

    <workdir>/checkpoints/models/<g>   the fitted model state of generation g, all seeds
    <workdir>/checkpoints/loop/<g>     after generation g - 1: the carry (model state, pool,
                                       task, root keys), the metrics so far, the pool layout

Loop checkpoints are written at chunk boundaries (the last two kept); model checkpoints
at every generation (all kept: they are the run's product).
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read."""


class RunCheckpoints:

  def __init__(self, workdir: pathlib.Path):
    root = pathlib.Path(workdir).absolute() / "checkpoints"
    self._loop_dir = root / "loop"
    self._loop = ocp.CheckpointManager(
        self._loop_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    self._models = ocp.CheckpointManager(
        root / "models", options=ocp.CheckpointManagerOptions(create=True))

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

  def restore_model(self, generation: int, abstract: Any) -> Any:
    return self._models.restore(generation, args=ocp.args.StandardRestore(abstract))

  def _read(self, step: int, fn):
    try:
      return fn()
    except Exception as e:  # orbax raises many types; the user needs which file and why
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise CheckpointError(
          f"Cannot read the checkpoint {self._loop_dir / str(step)} ({reason}); "
          "fix or remove it, or rerun with --overwrite to start over.") from e

  def close(self) -> None:
    self._models.wait_until_finished()
    self._loop.close()
    self._models.close()
