"""What a person watching a run sees: a one-line progress bar, TensorBoard event files, and
a clean stop on SIGTERM.

The bar (tqdm) shows steps within a generation with the training loss, steps/s and ETA, and
stays silent when stderr is not a terminal (CI, log files). TensorBoard events
(tensorboardX: no TensorFlow install) go to ``<workdir>/tensorboard``: ``train/loss`` per
logging window at the global step, every per-generation metric at its generation. Only
process 0 writes.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import threading

import jax
import numpy as np


class Preempted(Exception):
  """SIGTERM arrived; the run stopped at a checkpoint. The message says where."""


class StopRequest:
  """Remembers a SIGTERM (what Cloud TPU and most clusters send before preempting) so the
  driver can stop at the next checkpoint instead of dying mid-write."""

  def __init__(self):
    self.requested = False

  @contextlib.contextmanager
  def installed(self):
    if threading.current_thread() is not threading.main_thread():
      yield self  # signals can only be handled on the main thread
      return
    previous = signal.signal(signal.SIGTERM, self._handle)
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def figures_wanted() -> bool:
  """Whether runs draw their figures (plots/*.png, the 2-D scatter rows): yes unless
  $COLLAPSE_JAX_PLOTS is 0, e.g. for a sweep of many small runs whose report draws them
  together, or a test suite. Metrics, sample files and grids are written either way."""
  return os.environ.get("COLLAPSE_JAX_PLOTS", "1") != "0"


@contextlib.contextmanager
def figures(wanted: bool):
  """Within the block, runs draw their figures or not (`figures_wanted`); as it was after."""
  before = os.environ.get("COLLAPSE_JAX_PLOTS")
  os.environ["COLLAPSE_JAX_PLOTS"] = "1" if wanted else "0"
  try:
    yield
  finally:
    if before is None:
      del os.environ["COLLAPSE_JAX_PLOTS"]
    else:
      os.environ["COLLAPSE_JAX_PLOTS"] = before


def _summary_writer():
  """tensorboardX's SummaryWriter, imported without torch where torch is not loaded yet:
  tensorboardX imports it (1 s or more) only to accept torch tensors, and we log floats."""
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX allows
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Reporter:
  """Progress bar and TensorBoard writer of one run."""

  def __init__(self, workdir: pathlib.Path, num_generations: int):
    self.num_generations = num_generations
    self._lead = jax.process_index() == 0
    self._tty = self._lead and sys.stderr.isatty()
    self._writer = None
    if self._lead:
      self._writer = _summary_writer()(str(workdir / "tensorboard"), flush_secs=30)
    self._bar = None

  def start_generation(self, generation: int, total_steps: int, done_steps: int) -> None:
    if not self._tty:
      return
    from tqdm import tqdm
    self._bar = tqdm(total=total_steps, initial=done_steps, unit="step", leave=False,
                     dynamic_ncols=True,
                     desc=f"generation {generation} ({generation + 1} of {self.num_generations})")

  def segment(self, global_steps: list[int], losses: list[float], done: int) -> None:
    """One segment finished: its logging windows' losses at their global steps."""
    if self._writer is not None:
      for step, loss in zip(global_steps, losses):
        self._writer.add_scalar("train/loss", loss, step)
    if self._bar is not None:
      self._bar.set_postfix(loss=f"{losses[-1]:.4g}")
      self._bar.update(done - self._bar.n)

  def end_generation(self, generation: int, metrics: dict[str, np.ndarray]) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._writer is not None:
      for name, values in metrics.items():
        self._writer.add_scalar(f"generation/{name}", float(np.mean(values)), generation)
      self._writer.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.close()


def window_means(losses: np.ndarray, first_local: int, window: int
                 ) -> tuple[list[int], list[float]]:
  """Training-loss curve points of one segment: ``losses [seeds, steps]`` (generation-local
  steps ``first_local + 1 ...``) averaged over seeds and over windows of ``window`` steps
  from the segment's start (the last one may be shorter); returns (end steps, means)."""
  per_step = losses.mean(0)
  ends, means = [], []
  for lo in range(0, per_step.shape[0], window):
    hi = min(lo + window, per_step.shape[0])
    ends.append(first_local + hi)
    means.append(float(per_step[lo:hi].mean()))
  return ends, means
