"""Orbax checkpoints of a run: each generation's model, and the loop state to resume from.

    <workdir>/checkpoints/models/<g>   the fitted model state of generation g, all seeds
    <workdir>/checkpoints/loop/<g>     after generation g - 1: the carry but its pool
                                       (model state, task, root keys), the metrics so far,
                                       the pool layout and which pool slices rebuild the pool
    <workdir>/checkpoints/pool/<b>     the pool rows written as block b (0: the real set,
                                       g >= 1: generation g's block), saved once
    <workdir>/checkpoints/train/<id>   inside a generation trained in segments: the training
                                       state after a segment (id = g * 10**9 + local step)
    <workdir>/checkpoints/samples/<id> a large synthetic set sampled in chunks: chunk i of
                                       generation g (id = g * 10**9 + i)

Every checkpoint gets a SHA-256 digest of its files (``checkpoints/digests/<kind>/<id>.json``,
written after Orbax commits it), checked before it is read: a damaged file is named in one
sentence instead of surfacing as a TensorStore error, and `set_aside` moves a damaged
checkpoint and everything after it to ``checkpoints/damaged/`` when the user asks to resume
from the newest intact one.

The pool is append-only (a replacing policy rewrites its one block), so each block is
saved once, when written, instead of the whole pool at every loop checkpoint: a save then
copies one block to host memory, not the pool (Orbax snapshots what it saves), and writes it
to disk once. Blocks no kept loop checkpoint needs are deleted.

Loop checkpoints are written at chunk boundaries (the last two kept); model checkpoints
at every generation (all kept: they are the run's product); training checkpoints at segment
boundaries (the last two kept) and sample chunks (all kept) are deleted once their generation
is finished.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from collapse_jax.errors import UserError


TRAIN_ID = 10 ** 9  # ids inside a generation: generation * TRAIN_ID + local step or chunk


class CheckpointError(UserError):
  """A checkpoint exists but cannot be read."""


def _digest(directory: pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file under ``directory``, by relative path."""
  out = {}
  for f in sorted(p for p in directory.rglob("*") if p.is_file()):
    with open(f, "rb") as fh:
      out[str(f.relative_to(directory))] = hashlib.file_digest(fh, "sha256").hexdigest()
  return out


def _placed(abstract: Any, sharding: Any) -> Any:
  """``abstract``'s leaves as ``jax.ShapeDtypeStruct`` restore targets on ``sharding``: one
  sharding per leaf, or per subtree (a prefix of ``abstract``, e.g. one for all rows)."""
  place = lambda s, sub: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), sub)
  return jax.tree.map(place, sharding, abstract)


# The checkpoint kinds, each an Orbax manager in ``checkpoints/<kind>``, and how many of
# each are kept (None: all).
_KEEP = {"loop": 2, "train": 2, "models": None, "samples": None, "pool": None}


class RunCheckpoints:
  """The checkpoints of the run in ``workdir`` (the layout above), one Orbax manager per kind."""

  def __init__(self, workdir: pathlib.Path):
    self._root = pathlib.Path(workdir).absolute() / "checkpoints"
    self._managers = {kind: ocp.CheckpointManager(self._dir(kind), options=(
        ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)))
        for kind, keep in _KEEP.items()}

  def _dir(self, kind: str) -> pathlib.Path:
    return self._root / kind

  def _steps(self, kind: str) -> list[int]:
    return list(self._managers[kind].all_steps())

  def latest_loop_step(self) -> int | None:
    """Number of generations finished at the latest loop checkpoint, or None."""
    return self._managers["loop"].latest_step()

  def _save(self, kind: str, step: int, args) -> None:
    """Saves ``args`` as checkpoint ``kind``/``step``, waits for it, then seals it."""
    self._managers[kind].save(step, args=args)
    self._managers[kind].wait_until_finished()
    self._seal(kind, step)

  def _restore(self, kind: str, step: int, args):
    return self._read(kind, step, lambda: self._managers[kind].restore(step, args=args))

  def _delete(self, kind: str, step: int) -> None:
    self._managers[kind].delete(step)
    (self._root / "digests" / kind / f"{step}.json").unlink(missing_ok=True)

  def _seal(self, kind: str, step: int) -> None:
    """Writes the digest of a committed checkpoint (process 0; atomic)."""
    if jax.process_index() != 0:
      return
    path = self._root / "digests" / kind / f"{step}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_digest(self._dir(kind) / str(step))))
    tmp.replace(path)

  def damage(self, kind: str, step: int) -> str | None:
    """What is wrong with checkpoint ``kind``/``step`` (one clause), or None when its files
    match their digest (or it predates digests)."""
    path = self._root / "digests" / kind / f"{step}.json"
    if not path.exists():
      return None
    want, have = json.loads(path.read_text()), _digest(self._dir(kind) / str(step))
    for name, digest in want.items():
      if name not in have:
        return f"its file {name} is missing"
      if have[name] != digest:
        return f"its file {name} does not match the checksum saved with it"
    if kind == "loop":  # and the pool blocks it is rebuilt from (none listed: an older
      # version's checkpoint, which the driver refuses by name)
      for block, _, _ in self.restore_meta(step).get("pool", []):
        problem = self.damage("pool", block)
        if problem:
          return f"the pool block {self._dir('pool') / str(block)} it needs is damaged: {problem}"
    return None

  def verify(self, kind: str, step: int, way_on: str) -> None:
    """Raises `CheckpointError` in one sentence if checkpoint ``kind``/``step`` is damaged."""
    problem = self.damage(kind, step)
    if problem:
      raise CheckpointError(
          f"The checkpoint {self._dir(kind) / str(step)} is damaged ({problem}); {way_on}")

  def intact_loop_steps(self) -> list[int]:
    return [s for s in sorted(self._steps("loop")) if self.damage("loop", s) is None]

  def set_aside(self, generations_done: int) -> pathlib.Path:
    """Moves every checkpoint of a later point than ``generations_done`` generations (loop
    steps above it, models and training states of generations from it on) to
    ``checkpoints/damaged/<time>/``; returns that folder. The managers are reopened."""
    dest = self._root / "damaged" / time.strftime("%Y%m%d-%H%M%S")
    later = {"loop": lambda s: s > generations_done, "pool": lambda s: s > generations_done,
             "models": lambda s: s >= generations_done,
             "train": lambda s: s // TRAIN_ID >= generations_done,
             "samples": lambda s: s // TRAIN_ID >= generations_done}
    moves = [(kind, s) for kind, is_later in later.items() for s in self._steps(kind)
             if is_later(s)]
    self.close()
    for kind, step in moves:
      (dest / kind).mkdir(parents=True, exist_ok=True)
      shutil.move(str(self._dir(kind) / str(step)), str(dest / kind / str(step)))
      (self._root / "digests" / kind / f"{step}.json").unlink(missing_ok=True)
    self.__init__(self._root.parent)
    return dest

  def save_model(self, generation: int, state: Any) -> None:
    self._save("models", generation, ocp.args.StandardSave(state))

  def save_loop(self, generations_done: int, carry: Any, meta: dict,
                blocks: dict[int, Any]) -> None:
    """Saves the carry (without its pool) after ``generations_done`` generations, with
    ``blocks`` (pool rows by block id) written since the previous loop checkpoint first.
    ``meta`` is JSON; its ``"pool"`` lists ``[block, start, stop]`` to rebuild the pool from;
    afterwards blocks that no kept loop checkpoint lists are deleted."""
    self._managers["models"].wait_until_finished()  # a loop step implies its models
    for block, rows in blocks.items():
      if block in self._steps("pool"):  # left by a run stopped before its loop step
        self._managers["pool"].delete(block)
      self._save("pool", block, ocp.args.StandardSave(rows))
    self._save("loop", generations_done, ocp.args.Composite(
        carry=ocp.args.StandardSave(carry), meta=ocp.args.JsonSave(meta)))
    needed = {b for s in self._steps("loop") for b, _, _ in self.restore_meta(s)["pool"]}
    for block in self._steps("pool"):
      if block not in needed:
        self._delete("pool", block)

  def restore_meta(self, step: int) -> dict:
    return self._restore("loop", step, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def restore_carry(self, step: int, abstract: Any, shardings: Any) -> Any:
    target = _placed(abstract, shardings)
    return self._restore("loop", step, ocp.args.Composite(
        carry=ocp.args.StandardRestore(target))).carry

  def restore_pool_block(self, block: int, abstract: Any, sharding: Any) -> Any:
    """The pool rows saved as ``block``, shaped like ``abstract``, on ``sharding``."""
    return self._restore("pool", block, ocp.args.StandardRestore(_placed(abstract, sharding)))

  def save_train(self, generation: int, local_step: int, state: Any, meta: dict) -> None:
    """Saves a generation's training state after ``local_step`` of its steps."""
    self._save("train", generation * TRAIN_ID + local_step, ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def _of_generation(self, kind: str, generation: int) -> set[int]:
    """The local steps (or chunks) of ``generation``'s checkpoints of ``kind``."""
    return {s - generation * TRAIN_ID for s in self._steps(kind) if s // TRAIN_ID == generation}

  def latest_train(self, generation: int) -> int | None:
    """The local step of ``generation``'s newest training checkpoint, or None."""
    return max(self._of_generation("train", generation), default=None)

  def restore_train(self, generation: int, local_step: int, abstract: Any, shardings: Any
                    ) -> tuple[Any, dict]:
    out = self._restore("train", generation * TRAIN_ID + local_step, ocp.args.Composite(
        state=ocp.args.StandardRestore(_placed(abstract, shardings)),
        meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def save_samples(self, generation: int, chunk: int, samples: Any) -> None:
    """Saves chunk ``chunk`` of ``generation``'s synthetic set."""
    self._save("samples", generation * TRAIN_ID + chunk, ocp.args.StandardSave(samples))

  def sample_chunks(self, generation: int) -> int:
    """How many chunks of ``generation``'s synthetic set are saved (0, 1, ... in order)."""
    saved, n = self._of_generation("samples", generation), 0
    while n in saved:
      n += 1
    return n

  def restore_samples(self, generation: int, chunk: int, abstract: Any, sharding: Any) -> Any:
    step = generation * TRAIN_ID + chunk
    self.verify("samples", step, "remove it (the chunk is then sampled again) or rerun with "
                "--overwrite.")
    return self._restore("samples", step, ocp.args.StandardRestore(_placed(abstract, sharding)))

  def drop_in_progress(self, generation: int) -> None:
    """Deletes the training and sample-chunk checkpoints of generations up to
    ``generation`` (their model and loop checkpoints are saved)."""
    for kind in ("train", "samples"):
      for s in self._steps(kind):
        if s // TRAIN_ID <= generation:
          self._delete(kind, s)

  def model_generations(self) -> list[int]:
    """Generations whose model checkpoint is on disk."""
    return sorted(self._steps("models"))

  def restore_model(self, generation: int, abstract: Any, sharding: Any) -> Any:
    """Generation ``generation``'s model state, shaped like ``abstract``, on ``sharding``."""
    return self._restore("models", generation,
                         ocp.args.StandardRestore(_placed(abstract, sharding)))

  def _read(self, kind: str, step: int, fn):
    try:
      return fn()
    except Exception as e:  # orbax raises many types; the user needs which file and why
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      # TensorStore appends its whole spec to the message: keep the cause, not the dump.
      reason = reason.split(" [tensorstore_spec")[0].split("; See full TensorStore")[0]
      reason = reason if len(reason) <= 300 else reason[:300] + "..."
      raise CheckpointError(
          f"Cannot read the checkpoint {self._dir(kind) / str(step)} ({reason}); "
          "fix or remove it, or rerun with --overwrite to start over.") from e

  def close(self) -> None:
    self._managers["models"].wait_until_finished()
    for manager in self._managers.values():
      manager.close()
