"""Long generations: training in segments, each checkpointed, and sampling in chunks.

A generation of a large model can run for hours; each segment is one compiled call followed
by a checkpoint, a progress update and the training-loss curve, so a killed run resumes
inside the generation. Every key folds in the step, so the numbers equal the one-scan path.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from collapse_jax import checkpoint, errors, host_memory, progress
from collapse_jax.loop.generation import CompiledLoop, Loop, SegmentedLoop, is_trained
from collapse_jax.parallel import distributed


def segment_steps(config, loop: Loop, compiled: CompiledLoop) -> int:
  """Steps per training segment of a generation; 0: the generation runs inside one compiled
  scan (analytic families, and short generations where a checkpoint would cost more than a
  restart).

  ``config.checkpoint_every_steps``: N > 0 segments of N steps, 0 never, -1 (default) by
  model size: 5e9 / parameters, within [200, 10000] steps (a 9M-parameter LM every ~550
  steps, a 35M UNet every 200), when a generation is longer than one segment or its
  synthetic set is sampled in chunks (more than ``config.sample_chunk_rows`` rows).
  """
  every = config.checkpoint_every_steps
  if every == 0 or not is_trained(loop.model):
    return 0
  if every > 0:
    return every
  state = compiled.abstract_carry.state
  leaves = jax.tree.leaves(state["params"])
  params = sum(x.size for x in leaves) // leaves[0].shape[0]  # per replicate
  auto = int(np.clip(5e9 / max(params, 1), 200, 10_000))
  m = config.model
  longest = max(m.steps, m.initial_steps)
  if m.epochs:  # an accumulating pool at its largest
    rows = config.n_real + config.num_generations * config.n_synth
    longest = max(longest, int(m.epochs * rows / m.batch_size))
  chunked = 0 < config.sample_chunk_rows < loop.layout.n_synth
  return auto if longest > auto or chunked else 0


def run_generation(config, workdir, g: int, seg: SegmentedLoop, ckpts, consts, carry,
                          reporter: progress.Reporter, stop: progress.StopRequest,
                          abstract_state, state_shardings):
  """Generation ``g`` in training segments with a checkpoint after each; resumes from the
  newest one. Returns ``(carry, (metrics, states, training rows) with a generation axis of 1,
  curve)``."""
  local = ckpts.latest_train(g)
  if local is None:
    state, total = seg.start(consts, carry, g)
    first_step = distributed.to_host(state["step"])
    local, curve = 0, []
  else:
    ckpts.verify("train", g * checkpoint.TRAIN_ID + local,
                 "remove it (the generation then restarts from its previous segment "
                 "checkpoint or its beginning) or rerun with --overwrite.")
    state, meta = ckpts.restore_train(g, local, abstract_state, state_shardings)
    first_step = np.asarray(meta["first_step"], np.int32)
    total, curve = meta["total"], meta["curve"]
    logging.info("Resuming generation %d at step %d of %d.", g, local, total)
  reporter.start_generation(g, total, local)
  window = max(1, config.log_every_steps)
  while local < total:
    end = min(local + seg.segment_steps, total)
    new_state, losses = seg.segment(carry, state, g, first_step, end)
    losses = np.asarray(distributed.to_host(losses))[:, :end - local]
    bad = ~np.isfinite(losses).all(0)
    if bad.any():
      raise errors.NonFiniteError(
          f"Generation {g} reached a non-finite training loss at step "
          f"{local + int(np.argmax(bad)) + 1}; its last good checkpoint (step {local}) and "
          f"every earlier generation are intact in {workdir}.")
    ends, means = progress.window_means(losses, local, window)
    curve += [[e, m] for e, m in zip(ends, means)]
    state, local = new_state, end
    ckpts.save_train(g, local, state, {"first_step": first_step.tolist(), "total": total,
                                       "curve": curve})
    reporter.segment([int(first_step.max()) + e for e in ends], means, local)
    if stop.requested:
      raise progress.Preempted(
          f"Stopped on SIGTERM in generation {g} at step {local} of {total}, checkpointed "
          f"in {workdir}; rerun the same command to continue.")
  chunks = _sample_in_chunks(workdir, g, seg, ckpts, carry, state, stop)
  carry, outputs = seg.finish(consts, carry, state, g, chunks)
  return carry, jax.tree.map(lambda x: x[:, None], outputs), curve


def _sample_in_chunks(workdir, g: int, seg: SegmentedLoop, ckpts, carry, state,
                      stop: progress.StopRequest) -> list | None:
  """Generation ``g``'s synthetic set in chunks, each checkpointed (a rerun restores the
  saved ones), or None when the set is small enough to be drawn in one call."""
  if not seg.num_chunks:
    return None
  saved, chunks = ckpts.sample_chunks(g), []
  if saved:  # (a trace of the sampler, only to restore)
    abstract = jax.eval_shape(seg.sample_chunk, carry, state, g, 0)
  for i in range(seg.num_chunks):
    if i < saved:
      chunks.append(ckpts.restore_samples(g, i, abstract, seg.chunk_sharding))
      continue
    chunks.append(seg.sample_chunk(carry, state, g, i))
    ckpts.save_samples(g, i, chunks[-1])
    host_memory.release_freed_host_memory()
    logging.info("Generation %d: sampled chunk %d of %d (%d rows each).", g, i + 1,
                 seg.num_chunks, seg.chunk_rows)
    if stop.requested and i + 1 < seg.num_chunks:
      raise progress.Preempted(
          f"Stopped on SIGTERM in generation {g} after sampling chunk {i + 1} of "
          f"{seg.num_chunks}, checkpointed in {workdir}; rerun the same command to continue.")
  return chunks
