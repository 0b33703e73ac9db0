"""Nothing is lost to a mistake: what --overwrite may delete, one run per workdir, the
environment each run records, and a run stopped by Ctrl-C resuming to the same numbers."""
import json
import pathlib
import subprocess
import sys

import pytest

from collapse_jax import environment, experiment, validate
from collapse_jax import workdir as workdir_lib

import launcher_batch
from conftest import load_config, read_metrics


def _linreg(**overrides):
  config = load_config("linreg", "replace,smoke")
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished linreg run and its metrics (3 generations, one chunk each)."""
  workdir = tmp_path_factory.mktemp("run") / "lin"
  rows = experiment.train_and_evaluate(_linreg(generations_per_chunk=1), workdir)
  return workdir, rows


def _snapshot(path):
  return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
          if p.is_file() and not p.name.startswith(".lock.")}


def test_every_top_level_entry_the_package_writes_is_a_run_entry():
  """--overwrite refuses a run folder with entries outside RUN_ENTRIES: a new one the
  package writes must be added there."""
  import re
  root = pathlib.Path(workdir_lib.__file__).parent
  written = {m for f in root.rglob("*.py")
             for m in re.findall(r'workdir / "([^"/]+)"', f.read_text())}
  assert written and written <= workdir_lib.RUN_ENTRIES, written - workdir_lib.RUN_ENTRIES


def test_overwrite_never_empties_a_folder_that_holds_no_run(tmp_path):
  (tmp_path / "notes.txt").write_text("a user's own file")
  (tmp_path / "data").mkdir()
  with pytest.raises(workdir_lib.WorkdirError, match="holds none .*nothing was deleted"):
    experiment.train_and_evaluate(_linreg(), tmp_path, overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_overwrite_refuses_a_run_folder_holding_other_files(finished_run, tmp_path):
  workdir = tmp_path / "copy"
  import shutil
  shutil.copytree(finished_run[0], workdir)
  (workdir / "my_analysis.ipynb").write_text("{}")
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirError, match="also holds my_analysis.ipynb"):
    experiment.train_and_evaluate(_linreg(), workdir, overwrite=True)
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("workdir", ["", "  "])
def test_an_empty_workdir_is_refused(workdir):
  with pytest.raises(workdir_lib.WorkdirError, match="--workdir is empty"):
    experiment.train_and_evaluate(_linreg(), workdir, overwrite=True)


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://bucket/run", "file:///tmp/run"])
def test_a_url_as_workdir_is_refused(url, tmp_path, monkeypatch):
  """On a pod a bucket is the natural place for runs; pathlib would write ./gs:/bucket/run."""
  monkeypatch.chdir(tmp_path)
  with pytest.raises(workdir_lib.WorkdirError, match=f"The workdir {url} is a URL; .* gcsfuse"):
    experiment.train_and_evaluate(_linreg(), url)
  assert not list(tmp_path.iterdir())


def test_a_file_as_workdir_is_refused(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a folder"):
    experiment.train_and_evaluate(_linreg(), tmp_path / "f")
  assert (tmp_path / "f").read_text() == "x"


def test_a_refused_overwrite_leaves_the_earlier_run_whole(finished_run):
  workdir, _ = finished_run
  before = _snapshot(workdir)
  with pytest.raises(validate.ConfigError):
    experiment.train_and_evaluate(_linreg(num_seeds=0), workdir, overwrite=True)
  assert _snapshot(workdir) == before


def test_overwrite_deletes_a_run_and_starts_over(finished_run, tmp_path):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  # A killed run's temporary of an entry (`write_atomically`) is the run's, not the user's.
  (workdir / ".feature_classifier.npz.4242.tmp").write_bytes(b"cut")
  rows = experiment.train_and_evaluate(_linreg(num_generations=2), workdir, overwrite=True)
  assert max(r["generation"] for r in rows) == 1
  assert not (workdir / "checkpoints" / "models" / "2").exists()  # the old run is gone


def test_processes_writing_one_file_at_once_each_succeed(tmp_path, monkeypatch):
  """The hosts of a multi-host run (or test workers sharing a cache) may write the same
  file, with the same bytes, at once: another process's whole write lands while this one's
  is under way, and both succeed."""
  import os
  path = tmp_path / "feature_classifier.npz"

  def interrupted(f):
    f.write(b"the same bytes")
    with monkeypatch.context() as other_process:
      other_process.setattr(os, "getpid", lambda: os.getppid() + 100_000)
      workdir_lib.write_atomically(path, lambda g: g.write(b"the same bytes"))
  workdir_lib.write_atomically(path, interrupted)
  assert path.read_bytes() == b"the same bytes"
  assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_workdir_in_use_is_refused_and_a_dead_runs_lock_is_not(tmp_path):
  workdir = tmp_path / "run"
  with workdir_lib.hold(workdir, 0):
    with pytest.raises(workdir_lib.WorkdirError,
                       match=r"in use by another run \(it holds .lock.0\)"):
      experiment.train_and_evaluate(_linreg(), workdir)
  assert not (workdir / "config.json").exists()
  # A run killed while holding the lock (SIGKILL: no cleanup at all) blocks nobody.
  code = ("import pathlib, time; from collapse_jax import workdir as w\n"
          f"with w.hold(pathlib.Path({str(workdir)!r}), 0):\n"
          "  print('held', flush=True); time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lib.WorkdirError, match="in use by another run"):
      with workdir_lib.hold(workdir, 0):
        pass
  finally:
    holder.kill()
    holder.wait()
  with workdir_lib.hold(workdir, 0):  # the kernel dropped the dead process's lock
    pass
  with workdir_lib.hold(workdir, 1):  # another process of a multi-host run has its own
    with workdir_lib.hold(workdir, 0):
      pass


def test_each_run_records_its_environment_and_a_changed_one_is_named(finished_run, tmp_path):
  workdir, _ = finished_run
  history = json.loads((workdir / "environment.json").read_text())
  assert len(history) == 1 and history[0]["from_generation"] == 0
  env = history[0]["environment"]
  assert env == environment.describe()
  for key in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
              "device_kind", "device_count", "cpu"):
    assert env[key], key
  # The same environment again adds nothing; another one is recorded with one line.
  assert environment.record(workdir, 3) is None
  moved = dict(history[0], environment=dict(env, jax="0.0.1"))
  (tmp_path / "environment.json").write_text(json.dumps([moved]))
  notice = environment.record(tmp_path, 5)
  assert notice.startswith("This run continues under a different environment (jax 0.0.1 -> ")
  assert "generation 5 on are no longer bitwise" in notice and "\n" not in notice
  assert [h["from_generation"] for h in
          json.loads((tmp_path / "environment.json").read_text())] == [0, 5]


def test_an_interrupted_run_resumes_to_the_uninterrupted_numbers(finished_run, tmp_path,
                                                                 monkeypatch):
  _, uninterrupted = finished_run
  workdir = tmp_path / "run"
  config = _linreg(generations_per_chunk=1)
  save_model = experiment.checkpoint.RunCheckpoints.save_model

  def interrupt_at_generation_1(self, generation, state):
    if generation == 1:
      raise KeyboardInterrupt  # Ctrl-C mid-generation, after generation 0 was saved
    save_model(self, generation, state)

  monkeypatch.setattr(experiment.checkpoint.RunCheckpoints, "save_model",
                      interrupt_at_generation_1)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert experiment.train_and_evaluate(config, workdir) == uninterrupted
  assert read_metrics(workdir) == uninterrupted


def test_ctrl_c_is_one_line_and_exit_130():
  # Python's own Ctrl-C handler, also where the suite runs as a background job (which
  # starts its children with SIGINT ignored).
  code = ("import os, signal, time; from collapse_jax import cli\n"
          "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
          "def work():\n"
          "  os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"
          "cli.run_or_exit(work)")
  result = launcher_batch.run([sys.executable, "-c", code], timeout=120)
  assert result.returncode == 130
  assert result.stderr.strip() == "interrupted; rerun the same command to resume."
