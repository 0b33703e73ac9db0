"""launch/main.py end to end: bad input gets one sentence, exit 2, and an untouched workdir."""
import hashlib
import os
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


@pytest.mark.parametrize("args,message", [
    (["--config=configs/linreg.py:smoke", "--config.seed=abc"],
     "--config.seed=abc: config.seed takes an integer, not 'abc'."),
    (["--config=configs/linreg.py:smoke", "--config.policy.mix_lambda=half"],
     "config.policy.mix_lambda takes a number, not 'half'."),
    (["--config=configs/linreg_nope.py:smoke"],
     "The config file configs/linreg_nope.py (from --config=configs/linreg_nope.py:smoke) "
     "does not exist."),
    (["--config=configs/linreg_replace.py:smok"], "Unknown config variant 'smok'; known"),
    (["--config=configs/linreg.py:replace,0.5"],
     "A mix lambda (0.5) only applies to policy 'mix', not 'replace'."),
    (["--config=configs/linreg.py:smoke", "--config.model.nme=ols"],
     "--config.model.nme: config.model has no field 'nme'; did you mean config.model.name?"),
    (["--config=configs/linreg.py:smoke", "--config.mesh.data=3"],
     "mesh.data=3 does not fit the 1 device of this machine"),
    (["--config=configs/linreg.py:smoke", "extra"], "unexpected argument extra;"),
    (["--config=configs/linreg.py:smoke", "--overwrit"],
     "Unknown flag --overwrit; did you mean --overwrite?"),
], ids=["not_an_int", "wrong_type", "missing_config_file", "unknown_variant",
        "lambda_without_mix", "unknown_field", "mesh_too_big", "positional", "unknown_flag"])
def test_command_line_mistake_is_one_sentence_and_exit_2(tmp_path, args, message):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  before = _tree_digest(workdir)
  _assert_refused(_main(*args, f"--workdir={workdir}"), message)
  assert _tree_digest(workdir) == before


def test_missing_required_flag_is_named():
  _assert_refused(_main("--config=configs/linreg.py:smoke"), "--workdir is required.")


def _parse_config(*args):
  """The config launch/main.py would get from ``args`` (absl + config_flags, in-process)."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["main.py", *args]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                           lock_config=True, sys_argv=argv)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    values(argv)
  finally:
    os.chdir(cwd)
  return holder.value


def test_derived_row_counts_follow_overrides():
  from collapse_jax import validate
  config = _parse_config("--config=configs/linreg.py:smoke", "--config.data.num_rows=40")
  assert (config.data.num_rows, config.n_real, config.n_synth) == (40, 40, 40)
  validate.check(config)
  # A field set on its own stops following: n_synth can be a multiple of the design.
  config = _parse_config("--config=configs/linreg.py:smoke", "--config.n_synth=200")
  assert (config.data.num_rows, config.n_real, config.n_synth) == (100, 100, 200)
  validate.check(config)
  config = _parse_config("--config=configs/kde_moons.py:smoke", "--config.n_real=32")
  assert (config.n_real, config.n_synth) == (32, 32)


@pytest.mark.parametrize("value,parsed", [("0.5", 0.5), ("silverman", "silverman")])
def test_kde_bandwidth_takes_a_number_or_a_rule_from_the_command_line(value, parsed):
  from collapse_jax import validate
  from collapse_jax.models import kde
  config = _parse_config("--config=configs/kde_moons.py:smoke",
                         f"--config.model.bandwidth={value}")
  validate.check(config)
  assert kde.bandwidth_of(config.model.bandwidth) == parsed


def test_old_config_names_are_the_experiment_file_with_a_policy_variant(config_loader):
  for name in ("linreg", "gaussian", "kde_moons", "mnist_vae"):
    for policy in ("replace", "accumulate", "accumulate_subsample"):
      old = config_loader(f"{name}_{policy}", "smoke")
      assert old.to_json() == config_loader(name, f"{policy},smoke").to_json()
  assert config_loader("linreg", None).policy.name == "accumulate"  # the default
  mix = config_loader("kde_moons", "mix,inf,smoke").policy
  assert (mix.name, mix.mix_lambda) == ("mix", float("inf"))


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
  _assert_refused(result, f"The checkpoint {step} is damaged")
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
  assert "| replace | log_det_ratio |" in table
  assert "| accumulate | trace_ratio |" in table
