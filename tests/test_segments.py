"""Long generations in segments: bitwise the same whatever the segment size (one segment
for the whole generation included), resumable inside a generation (in training or in
sampling its synthetic set in chunks) after SIGKILL or SIGTERM, with training curves,
TensorBoard events, and a clean stop on a non-finite loss."""
import pathlib
import signal
import sys
import time

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from collapse_jax import errors, experiment, presets

import launcher_batch
from conftest import ROOT, load_config, read_metrics

# 64 synthetic rows per generation, sampled in 4 checkpointed chunks; segments of 7 steps
# (24 = 7 + 7 + 7 + 3: a last segment shorter than the others). The killed runs use the
# segment programs the in-process run of the same size compiled (the suite's compilation
# cache), so they start as fast as a rerun.
OVERRIDES = {"model.steps": 24, "checkpoint_every_steps": 7, "num_seeds": 2,
             "log_every_steps": 2, "sample_chunk_rows": 16}


def _config(**overrides):
  config = load_config("digits_vae:replace")
  for key, value in (OVERRIDES | overrides).items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  config.evals = ml_collections.ConfigDict()
  return config


def _model(workdir, g):
  manager = ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints" / "models")
  state = manager.restore(g)
  manager.close()
  return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("whole")
  # One segment spans each generation: unsegmented training through the same driver.
  rows = experiment.train_and_evaluate(_config(checkpoint_every_steps=1000), workdir)
  return rows, _model(workdir, 1)


@pytest.mark.parametrize("every", [7])
def test_any_segment_size_gives_the_unsegmented_result_bitwise(uninterrupted, every, tmp_path,
                                                               monkeypatch):
  monkeypatch.setenv("COLLAPSE_JAX_PLOTS", "1")  # (the suite skips figures)
  rows = experiment.train_and_evaluate(_config(checkpoint_every_steps=every), tmp_path)
  assert rows == uninterrupted[0]
  for a, b in zip(*(jax_leaves(t) for t in (_model(tmp_path, 1), uninterrupted[1]))):
    np.testing.assert_array_equal(a, b)
  # Progress a person can look at: the training curve of each generation, TensorBoard.
  assert (tmp_path / "plots" / "train_loss.png").stat().st_size > 1000
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and b"train/loss" in events[0].read_bytes()
  for kind in ("train", "samples"):  # dropped once their generation is finished
    assert not list((tmp_path / "checkpoints" / kind).iterdir())


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _launch(workdir):
  args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()] + ["--config.evals={}"]
  return launcher_batch.Popen(
      [sys.executable, str(ROOT / "launch" / "main.py"),
       "--config=configs/digits_vae.py:replace,smoke", f"--workdir={workdir}", *args],
      cwd=ROOT)


def _wait_for(proc, path_glob, root, timeout=240):
  """Polls until a checkpoint matching ``path_glob`` appears under ``root``."""
  end = time.time() + timeout
  while time.time() < end:
    if list(pathlib.Path(root).glob(path_glob)) or proc.poll() is not None:
      return
    time.sleep(0.01)
  raise AssertionError(f"{path_glob} never appeared")


def test_killed_and_preempted_runs_resume_inside_a_generation_bitwise(uninterrupted, tmp_path):
  workdir = tmp_path / "run"
  ckpt = workdir / "checkpoints"
  # SIGKILL mid-generation 0, as soon as its first segment is checkpointed (the next
  # segment or checkpoint write is then in flight).
  proc = _launch(workdir)
  _wait_for(proc, "train/[0-9]*", ckpt)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # SIGKILL while generation 0 samples its synthetic set (its first chunk is saved).
  proc = _launch(workdir)
  _wait_for(proc, "samples/[0-9]*", ckpt)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not list((ckpt / "loop").glob("[0-9]*"))  # really stopped inside generation 0
  # SIGTERM in generation 1: stops at the next segment boundary, says where, exits 0.
  proc = _launch(workdir)
  _wait_for(proc, "train/1000000*", ckpt)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=240)
  if "Stopped on SIGTERM" in err:  # (unless the run finished first)
    assert proc.returncode == 0, err[-2000:]
    assert "rerun the same command to continue" in err and "Traceback" not in err
  proc = _launch(workdir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  rows, model = uninterrupted
  assert read_metrics(workdir) == rows
  for a, b in zip(jax_leaves(_model(workdir, 1)), jax_leaves(model)):
    np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_naming_generation_and_step(tmp_path):
  c = presets.base("replace")
  c.n_real = c.n_synth = 8
  c.num_generations, c.checkpoint_every_steps = 2, 3
  c.model = ml_collections.ConfigDict({"name": "plugins.diverging_family"})
  c.data = ml_collections.ConfigDict({"source": "plugins.ring_source"})
  with pytest.raises(errors.NonFiniteError,
                     match=r"Generation 0 reached a non-finite training loss at step (\d+); "
                           r"its last good checkpoint \(step (\d+)\)") as error:
    experiment.train_and_evaluate(c, tmp_path)
  import re
  bad, good = map(int, re.search(r"step (\d+);.*step (\d+)\)", str(error.value)).groups())
  assert good < bad <= good + 3 and good % 3 == 0
  # The last good segment's checkpoint is on disk for a rerun with a smaller lr.
  assert (tmp_path / "checkpoints" / "train" / str(good)).exists()


NAN = float("nan")


def test_a_non_finite_first_generation_says_none_is_checkpointed(tmp_path, monkeypatch):
  from plugins import diverging_family  # its evaluation made nan from the first generation
  monkeypatch.setattr(diverging_family.Diverging, "evaluate",
                      lambda self, state, task, key: {"test_loss": state["params"]["w"] * NAN})
  c = presets.base("replace")
  c.n_real = c.n_synth = 8
  c.num_generations, c.checkpoint_every_steps = 2, 0
  c.model = ml_collections.ConfigDict({"name": "plugins.diverging_family"})
  c.data = ml_collections.ConfigDict({"source": "plugins.ring_source"})
  with pytest.raises(errors.NonFiniteError, match=r"^Generation 0 produced non-finite "
                     r"test_loss; no generation finished, so none is checkpointed\.$"):
    experiment.train_and_evaluate(c, tmp_path)


def test_the_sampled_chunks_are_the_synthetic_block_written_to_the_pool():
  from collapse_jax import rng, validate
  from collapse_jax.loop.generation import CompiledLoop, SegmentedLoop
  from collapse_jax.parallel import mesh as mesh_lib
  config = _config()
  mesh = mesh_lib.from_config(config.mesh)
  layout = validate.policy_of(config).layout(config.num_generations, multiple_of=mesh.size)
  loop = experiment.build_loop(config, layout)
  consts, roots = loop.source.consts(), rng.seed_keys(config.seed, config.num_seeds)
  compiled = CompiledLoop(loop, mesh, consts, roots)
  seg = SegmentedLoop(compiled, 3, 16)
  assert (seg.num_chunks, seg.chunk_rows) == (4, 16)
  carry = compiled.init(consts, roots)
  state, _ = seg.start(consts, carry, 0)
  chunks = [seg.sample_chunk(carry, state, 0, i) for i in range(seg.num_chunks)]
  carry, _ = seg.finish(consts, carry, state, 0, chunks)
  start = layout.block_start(1)
  written = np.asarray(carry.pool.data["image"][:, start:start + layout.n_synth])
  want = np.concatenate([np.asarray(carry.pool.encode(c)["image"]) for c in chunks], axis=1)
  np.testing.assert_array_equal(written, want)


def test_a_curated_generation_resumes_inside_its_chunked_sampling_bitwise(tmp_path,
                                                                          monkeypatch):
  """Curation draws factor x each chunk's rows and keeps the best by the VAE's ELBO; a run
  stopped after a chunk's checkpoint (its rows and curation metrics) ends as one that never
  stopped."""
  from collapse_jax import checkpoint
  curated = lambda: _config(**{"curation.rule": "top", "curation.factor": 2,
                               "checkpoint_every_steps": 1000})
  whole = experiment.train_and_evaluate(curated(), tmp_path / "whole")
  assert all(r["curation_score_kept"] > r["curation_score_drawn"] for r in whole)
  save = checkpoint.RunCheckpoints.save_samples

  def save_then_stop(self, generation, chunk, samples):
    save(self, generation, chunk, samples)
    if (generation, chunk) == (1, 1):
      raise KeyboardInterrupt
  monkeypatch.setattr(checkpoint.RunCheckpoints, "save_samples", save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(curated(), tmp_path / "cut")
  monkeypatch.setattr(checkpoint.RunCheckpoints, "save_samples", save)
  assert experiment.train_and_evaluate(curated(), tmp_path / "cut") == whole
