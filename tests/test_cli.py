"""launch/main.py end to end: bad input gets one sentence, exit 2, and an untouched workdir."""
import hashlib
import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT, read_metrics

MAIN = [sys.executable, str(ROOT / "launch" / "main.py")]


def _main(*args, cwd=ROOT):
  return subprocess.run(MAIN + list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


def _tree_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  for f in sorted(p for p in path.rglob("*") if p.is_file()):
    h.update(str(f.relative_to(path)).encode() + f.read_bytes())
  return h.hexdigest()


def _assert_refused(result, message):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith("error: ") and message in lines[-1], lines[-5:]
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("override,message", [
    ("--config.policy.name=bogus", "Unknown policy 'bogus'"),
    ("--config.model.name=bogus", "Unknown model 'bogus'"),
    ("--config.data.source=bogus", "Unknown data source 'bogus'"),
    ("--config.policy.mix_lambda=-0.5", "mix_lambda must be >= 0"),
    ("--config.num_generations=0", "num_generations must be at least 1"),
    ("--config.data.num_rows=11", "num_rows T > dim d + 1"),
    ("--config.data.max_dim=4", "data.max_dim (4) must be at least data.dim (10)"),
])
def test_bad_config_is_refused_before_touching_the_workdir(tmp_path, override, message):
  workdir = tmp_path / "run"
  result = _main("--config=configs/linreg_replace.py:smoke", f"--workdir={workdir}", override)
  _assert_refused(result, message)
  assert not workdir.exists()


def test_unknown_toy_dataset_is_refused(tmp_path):
  result = _main("--config=configs/kde_moons_replace.py:smoke", f"--workdir={tmp_path / 'r'}",
                 "--config.data.name=spirals")
  _assert_refused(result, "Unknown 2-D toy 'spirals'")


def test_workdir_of_another_config_is_refused_continuation_resumes_overwrite_restarts(tmp_path):
  workdir = tmp_path / "run"
  first = _main("--config=configs/gaussian_replace.py:smoke", f"--workdir={workdir}")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "generation 3/3" in first.stderr  # progress a person can follow
  assert (workdir / "plots" / "log_det_ratio.png").exists()
  before = _tree_digest(workdir)

  other = _main("--config=configs/gaussian_accumulate.py:smoke", f"--workdir={workdir}")
  _assert_refused(other, "holds a run of a different config (fields policy differ)")
  assert _tree_digest(workdir) == before

  longer = _main("--config=configs/gaussian_replace.py:smoke", f"--workdir={workdir}",
                 "--config.num_generations=5")
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert "Resuming" in longer.stderr
  assert [r["generation"] for r in read_metrics(workdir)][-1] == 4

  fresh = _main("--config=configs/gaussian_accumulate.py:smoke", f"--workdir={workdir}",
                "--overwrite")
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  assert max(r["generation"] for r in read_metrics(workdir)) == 2


def test_unreadable_checkpoint_is_named_not_silently_restarted(tmp_path):
  workdir = tmp_path / "run"
  assert _main("--config=configs/gaussian_replace.py:smoke", f"--workdir={workdir}").returncode == 0
  step = workdir / "checkpoints" / "loop" / "3"
  for f in step.rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  before = _tree_digest(workdir)
  result = _main("--config=configs/gaussian_replace.py:smoke", f"--workdir={workdir}",
                 "--config.num_generations=4")
  _assert_refused(result, f"Cannot read the checkpoint {step}")
  assert _tree_digest(workdir) == before


def test_report_compares_runs(tmp_path):
  for policy in ("replace", "accumulate"):
    assert _main(f"--config=configs/gaussian_{policy}.py:smoke",
                 f"--workdir={tmp_path / policy}").returncode == 0
  out = tmp_path / "cmp"
  result = subprocess.run([sys.executable, str(ROOT / "launch" / "report.py"),
                           str(tmp_path / "replace"), str(tmp_path / "accumulate"),
                           f"--out={out}"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert (out / "comparison.png").stat().st_size > 10_000
  table = (out / "comparison.md").read_text()
  assert "| replace [replace] | log_det_ratio |" in table
  assert "| accumulate [accumulate] | trace_ratio |" in table
