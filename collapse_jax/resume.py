"""Resume bookkeeping: the loop checkpoint after each chunk, and the carry rebuilt from it.

A loop checkpoint holds the carry without its pool, the metrics history and the pool's
slices; the pool's rows are saved a block at a time, once (checkpoint.RunCheckpoints), and
replayed in order on restore, so a resumed run equals an uninterrupted one bitwise.
"""
from __future__ import annotations

import jax
from absl import logging

from collapse_jax import checkpoint
from collapse_jax.loop.generation import Carry, CompiledLoop
from collapse_jax.loop.pool import PoolLayout
from collapse_jax.parallel import mesh as mesh_lib


def restore(config, ckpts, compiled: CompiledLoop, compile_layout, mesh, consts, roots,
            workdir, resume_from_intact: bool):
  """(generations done, carry, metrics history, training curves, pool slices) from the latest
  loop checkpoint, or None. A damaged latest checkpoint is refused in one sentence, or, with
  ``resume_from_intact``, set aside with everything after the newest intact one.
  ``compile_layout(layout)``: the run's `CompiledLoop` for the saved pool layout (a resume
  with more generations has a larger pool)."""
  step = ckpts.latest_loop_step()
  if step is None:
    return None
  problem = ckpts.damage("loop", step)
  if problem:
    intact = [s for s in ckpts.intact_loop_steps() if s < step]
    if not resume_from_intact:
      way = (f"rerun with --resume_from_intact to continue from the newest intact one "
             f"(after generation {intact[-1] - 1}), or " if intact else "rerun ")
      ckpts.verify("loop", step, way + "with --overwrite to start over.")
    if not intact:
      raise checkpoint.CheckpointError(
          f"The checkpoint {workdir / 'checkpoints' / 'loop' / str(step)} is damaged "
          f"({problem}) and no older intact one is left; rerun with --overwrite.")
    aside = ckpts.set_aside(intact[-1])
    logging.warning("The newest checkpoint was damaged (%s); continuing after generation %d, "
                    "later checkpoints moved to %s.", problem, intact[-1] - 1, aside)
    step = intact[-1]
  meta = ckpts.restore_meta(step)
  curves = meta.get("curves", {})
  if "pool" not in meta:
    raise checkpoint.CheckpointError(
        f"The checkpoints in {workdir} were written by an older collapse_jax (the pool inside "
        "the loop checkpoint); rerun with --overwrite to start over.")
  if step >= config.num_generations:  # already done: nothing to continue
    return step, None, meta["history"][:config.num_generations], curves, meta["pool"]
  old_layout = PoolLayout(**meta["layout"])
  old = compile_layout(old_layout)
  saved = ckpts.restore_carry(step, _without_pool(old.abstract_carry),
                              _without_pool(old.carry_shardings))
  pool = old.empty_pool()
  for block, start, stop in meta["pool"]:
    rows = ckpts.restore_pool_block(block, old.abstract_pool_rows(start, stop),
                                    mesh_lib.rows(mesh))
    pool = old.write_pool_rows(pool, rows, start)
  carry = Carry(pool=pool, **saved)
  new_layout = compiled.loop.layout
  if old_layout != new_layout:
    carry = carry._replace(pool=jax.vmap(lambda p: p.resized(new_layout))(carry.pool))
    new_state = compiled.abstract_carry.state
    same = jax.tree.map(lambda a, b: a.shape == b.shape, carry.state, new_state)
    if not all(jax.tree.leaves(same)):
      # Only nonparametric states (KDE) are sized by the pool; a scratch run re-initialises
      # them anyway before the next fit.
      carry = carry._replace(state=compiled.init(consts, roots).state)
  return step, carry, meta["history"], curves, meta["pool"]


def save(ckpts, compiled: CompiledLoop, done: int, carry, meta: dict, slices: list,
               blocks: list[int]) -> list:
  """Saves the loop checkpoint after ``done`` generations, with the pool rows of ``blocks``
  (written since the previous one) saved beside it; returns the pool slices
  ``[[block, start, stop], ...]`` that rebuild the pool, replayed in order (a slice every
  later one covers is dropped: a replacing policy keeps one)."""
  layout = compiled.loop.layout
  new = [[b, *layout.written_rows(b)] for b in blocks]
  new = [s for s in new if s[1] < s[2]]
  slices = slices + new
  keep = [s for i, s in enumerate(slices)
          if not _covered(s[1:], [t[1:] for t in slices[i + 1:]])]
  # A chunk of several generations may rewrite a ring slot: only its newest block is saved.
  rows = {b: compiled.pool_rows(carry.pool, start, stop) for b, start, stop in new
          if [b, start, stop] in keep}
  ckpts.save_loop(done, _without_pool(carry), meta | {"pool": keep}, rows)
  return keep


def _without_pool(carry: Carry) -> dict:
  """A carry's fields but its pool (what a loop checkpoint holds), as a dict."""
  return {k: v for k, v in carry._asdict().items() if k != "pool"}


def _covered(span, spans) -> bool:
  """Whether row range ``span`` lies inside the union of ``spans`` (all ``[start, stop)``)."""
  start, stop = span
  for a, b in sorted(spans):
    if a > start:
      break
    start = max(start, b)
  return start >= stop
