"""A damaged checkpoint: named in one sentence with the way on (exit 2, workdir untouched);
with --resume_from_intact the run continues from the newest intact one, bitwise.

The launchers' answer (exit 2, one ``error:`` line) is `cli.run_or_exit`'s, run here
in-process; test_cli runs launch/main.py itself on a damaged checkpoint."""
import shutil

import pytest

from collapse_jax import checkpoint, cli, experiment, inference

from conftest import load_config, read_metrics
from test_cli import _tree_digest


def _config(generations):
  config = load_config("gaussian:replace")
  config.generations_per_chunk, config.num_generations = 1, generations
  config.evals = {}
  return config


def _flip_bytes(path):
  data = bytearray(path.read_bytes())
  for i in range(min(40, len(data))):
    data[-1 - i] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
  """The metrics of an uninterrupted 5-generation run, for the resumed ones to match."""
  return experiment.train_and_evaluate(_config(5), tmp_path_factory.mktemp("whole"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """``finished(g)``: a new copy of a finished g-generation run (each made once)."""
  runs = {}

  def copy(generations, to):
    if generations not in runs:
      runs[generations] = tmp_path_factory.mktemp(f"g{generations}") / "run"
      experiment.train_and_evaluate(_config(generations), runs[generations])
    shutil.copytree(runs[generations], to)
    return to
  return copy


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_newest_checkpoint(damage, whole, finished, tmp_path, capsys):
  workdir = finished(3, tmp_path / "run")
  newest = workdir / "checkpoints" / "loop" / "3"
  target = max((p for p in (newest / "carry").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  if damage == "flip":
    _flip_bytes(target)
  else:
    target.write_bytes(target.read_bytes()[:10])
  before = _tree_digest(workdir)
  capsys.readouterr()
  with pytest.raises(SystemExit) as stop:  # as launch/main.py runs it (an exception: a bug)
    cli.run_or_exit(experiment.train_and_evaluate, _config(5), workdir)
  stderr = capsys.readouterr().err
  assert stop.value.code == 2, stderr[-2000:]
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in stderr
  assert f"The checkpoint {newest} is damaged (its file carry/" in lines[0]
  assert "--resume_from_intact to continue from the newest intact one (after generation 1)" \
      in lines[0]
  assert _tree_digest(workdir) == before
  rows = experiment.train_and_evaluate(_config(5), workdir, resume_from_intact=True)
  assert rows == whole == read_metrics(workdir)
  assert list((workdir / "checkpoints" / "damaged").glob("*/loop/3"))


def test_damaged_model_checkpoint_is_named(finished, tmp_path):
  workdir = finished(2, tmp_path / "run")
  data = max((p for p in (workdir / "checkpoints" / "models" / "1").rglob("*")
              if p.is_file() and "d" == p.parent.name), key=lambda p: p.stat().st_size)
  _flip_bytes(data)
  with pytest.raises(checkpoint.CheckpointError, match=r"models/1 is damaged \(its file .* "
                     r"does not match the checksum saved with it\); rerun the generation"):
    inference.load_generation(workdir, 1)


def _steps(folder):
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def test_damaged_pool_block(whole, finished, tmp_path):
  """The pool is saved a block at a time: a replacing run keeps the real set and the blocks
  its two loop checkpoints need; a damaged block damages the loop checkpoint that needs it."""
  workdir = finished(3, tmp_path / "run")
  pool = workdir / "checkpoints" / "pool"
  assert _steps(pool) == [0, 2, 3] and _steps(workdir / "checkpoints" / "loop") == [2, 3]
  _flip_bytes(max((p for p in (pool / "3").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size))
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf"loop/3 is damaged \(the pool block {pool / '3'} it needs is "
                           r"damaged: its file .* does not match the checksum saved with it\)"):
    experiment.train_and_evaluate(_config(5), workdir)
  rows = experiment.train_and_evaluate(_config(5), workdir, resume_from_intact=True)
  assert rows == whole
  assert list((workdir / "checkpoints" / "damaged").glob("*/pool/3"))


def test_loop_checkpoint_of_an_older_version_is_refused_by_name(finished, tmp_path):
  """A loop checkpoint that holds its pool inside (no list of pool blocks) is intact but
  unreadable by this version: named in one sentence, not a KeyError."""
  import json
  workdir = finished(2, tmp_path / "run")
  meta = workdir / "checkpoints" / "loop" / "2" / "meta" / "metadata"
  old = json.loads(meta.read_text())
  del old["pool"]
  meta.write_text(json.dumps(old))
  ckpts = checkpoint.RunCheckpoints(workdir)
  ckpts._seal("loop", 2)  # as the older version sealed it: its digest matches
  ckpts.close()
  with pytest.raises(checkpoint.CheckpointError, match="written by an older collapse_jax"):
    experiment.train_and_evaluate(_config(3), workdir)
