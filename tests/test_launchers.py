"""One convention for every launcher: a user's mistake or an OS refusal is one `error:`
sentence and exit 2 (cli.run_or_exit), whatever the launcher and whatever the path."""
import errno
import pathlib
import subprocess
import sys

import pytest

from collapse_jax import cli, experiment, inference
from collapse_jax.report import compare

import launcher_batch
from conftest import ROOT, load_config, read_metrics


def _exit_sentence(capsys, fn, *args, **kwargs) -> str:
  """Runs ``fn`` as a launcher would; asserts exit 2 and returns its one stderr line."""
  with pytest.raises(SystemExit) as stop:
    cli.run_or_exit(fn, *args, **kwargs)
  assert stop.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


@pytest.fixture
def linreg_run(smoke_run):
  """The suite's shared linreg replace smoke run's workdir (copy it before changing it)."""
  return smoke_run("linreg:replace")[0]


@pytest.mark.parametrize("code,cause", [
    (errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
def test_a_workdir_the_os_refuses_is_one_sentence(tmp_path, monkeypatch, capsys, code, cause):
  # (As root, chmod does not refuse anything: the OS's answer is simulated at mkdir.)
  def refuse(self, *args, **kwargs):
    raise OSError(code, cause.capitalize(), str(self))
  monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
  line = _exit_sentence(capsys, experiment.train_and_evaluate,
                        load_config("linreg", "replace,smoke"), tmp_path / "run")
  assert line == f"error: Cannot use {tmp_path / 'run'}: {cause}."


def test_a_full_disk_names_the_path_and_the_cause(capsys):
  def write():
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl.tmp")
  assert _exit_sentence(capsys, write) == (
      "error: Cannot write /runs/x/metrics.jsonl.tmp: the disk is full; free space and rerun "
      "the same command.")


@pytest.mark.parametrize("content,words", [
    ("", "is empty: the run has no finished generation yet."),
    ('{"generation": 0, "seed": 0, "test_error": 0.1}\n{"generation": 1, "se',
     "is damaged at line 2"),
])
def test_report_on_an_empty_or_cut_metrics_file(linreg_run, tmp_path, capsys, content, words):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(linreg_run, workdir)
  (workdir / "metrics.jsonl").write_text(content)
  line = _exit_sentence(capsys, compare.compare, [workdir], tmp_path / "out")
  assert words in line and str(workdir / "metrics.jsonl") in line
  assert not (tmp_path / "out").exists()


def test_a_finished_run_rewrites_its_damaged_metrics(linreg_run, tmp_path):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(linreg_run, workdir)
  good = (workdir / "metrics.jsonl").read_text()
  (workdir / "metrics.jsonl").write_text(good[:50])
  experiment.train_and_evaluate(load_config("linreg", "replace,smoke"), workdir)
  assert (workdir / "metrics.jsonl").read_text() == good


def test_report_on_a_folder_whose_config_is_not_json(linreg_run, tmp_path, capsys):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(linreg_run, workdir)
  (workdir / "config.json").write_text("{not json")
  assert "config.json is not valid JSON" in _exit_sentence(
      capsys, compare.compare, [workdir], tmp_path / "out")


def test_sample_cli_on_a_linreg_run_with_its_defaults(linreg_run, tmp_path, capsys):
  """The README's sample command on 1-D rows: .npz works with the default --num; .png and an
  unwritable --out are one sentence each."""
  sample = [sys.executable, str(ROOT / "launch" / "sample.py"), f"--workdir={linreg_run}",
            "--generation=1"]
  ok = launcher_batch.run(sample + [f"--out={tmp_path / 's.npz'}"])
  assert ok.returncode == 0, ok.stderr[-2000:]
  import numpy as np
  assert np.load(tmp_path / "s.npz")["y"].shape == (64,)
  misspelt = launcher_batch.run(sample + ["--nmu=3", f"--out={tmp_path / 'm.npz'}"])
  assert misspelt.returncode == 2
  assert misspelt.stderr.strip() == "error: Unknown flag --nmu; did you mean --num?"
  # What main() does after the flags, in-process.
  sys.path.insert(0, str(ROOT / "launch"))
  import sample as sample_launcher
  gen = inference.load_generation(linreg_run, 1)
  rows = inference.sample_generation(gen, 64)
  for out, words in [(tmp_path / "s.png", "rows of shape () can be written as .npz only"),
                     (tmp_path / "s.npz" / "x.npz", f"Cannot use {tmp_path / 's.npz'}")]:
    assert words in _exit_sentence(capsys, sample_launcher.write, gen, rows, out)


def test_sample_cli_writes_a_language_models_stories_as_text(smoke_run, tmp_path, capsys):
  """Token rows go to .txt decoded by the run's tokenizer (one story a paragraph, cut at
  EOS), or to .npz; a .png is refused naming both."""
  sys.path.insert(0, str(ROOT / "launch"))
  import sample as sample_launcher
  from collapse_jax.evals import text
  gen = inference.load_generation(smoke_run("tinystories:replace")[0], 1)
  rows = inference.sample_generation(gen, 3)
  sample_launcher.write(gen, rows, tmp_path / "s.txt")
  tokenizer = gen.loop.source.tokenizer
  want = [tokenizer.decode(text.story_ids(row)[0]) for row in rows["tokens"]]
  assert (tmp_path / "s.txt").read_text() == "".join(f"{s}\n\n" for s in want)
  assert "can be written as .npz or .txt only" in _exit_sentence(
      capsys, sample_launcher.write, gen, rows, tmp_path / "s.png")


def test_compare_policies_refuses_an_empty_or_repeated_list(tmp_path):
  launcher = ["launch/compare_policies.py", "--config=configs/linreg.py:smoke",
              f"--workdir={tmp_path / 'w'}"]
  cases = [("", "--policies needs a comma-separated list"),
           ("replace,replace", "names a policy twice")]
  results = launcher_batch.run_many([([*launcher, f"--policies={policies}"], ROOT)
                                     for policies, _ in cases])
  for result, (_, words) in zip(results, cases):
    assert result.returncode == 2 and words in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "w").exists()


def test_report_refuses_no_run_or_one_run_named_twice(linreg_run, tmp_path):
  report = ["launch/report.py", f"--out={tmp_path / 'report'}"]
  cases = [([], "give one or more workdirs to compare"),
           ([linreg_run, f"{linreg_run}/"], f"{linreg_run} given twice; name each run once.")]
  results = launcher_batch.run_many([([*report, *runs], ROOT) for runs, _ in cases])
  for result, (_, words) in zip(results, cases):
    assert result.returncode == 2 and words in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "report").exists()


def test_a_url_as_output_path_is_refused_by_every_launcher(linreg_run, tmp_path):
  """pathlib would write gs://b/x to ./gs:/b/x (tests/test_workdir.py: the library's side)."""
  config = f"--config={ROOT}/configs/linreg.py:smoke"
  cases = [("main.py", config, "--workdir=gs://b/run"),
           ("sweep.py", config, "--sweep=seed=0,1", "--workdir=gs://b/sweep"),
           ("report.py", str(linreg_run), "--out=gs://b/report"),
           ("sample.py", f"--workdir={linreg_run}", "--generation=0", "--out=gs://b/s.npz")]
  results = launcher_batch.run_many([([ROOT / "launch" / script, *args], tmp_path)
                      for script, *args in cases])
  for result, case in zip(results, cases):
    url = case[-1].split("=", 1)[1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{url} is a URL; collapse_jax writes to a file system" in result.stderr
  assert not list(tmp_path.iterdir())


def test_a_platform_the_machine_lacks_is_one_sentence(tmp_path):
  import os
  result = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "main.py"), "--config=configs/linreg.py:smoke",
       f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="nosuchplatform"))
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: JAX cannot start the platform nosuchplatform")
  assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


def test_a_run_of_a_plugin_that_cannot_be_imported_is_one_sentence(linreg_run, tmp_path,
                                                                    capsys):
  """sample.py / load_generation on a run whose family module is not on PYTHONPATH."""
  import json
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(linreg_run, workdir)
  config = json.loads((workdir / "config.json").read_text())
  config["model"]["name"] = "my_lab.gone"
  (workdir / "config.json").write_text(json.dumps(config))
  line = _exit_sentence(capsys, inference.load_generation, workdir, 0)
  assert line.startswith("error: Cannot import the model module 'my_lab.gone'"), line


def test_a_config_of_plugins_runs_from_the_command_line_with_overrides(tmp_path):
  """The README's plug-in example: tests/plugins/ring_config.py with a plug-in field set on
  the command line; without the plug-ins on PYTHONPATH, one sentence."""
  import json
  import os
  args = ["launch/main.py", "--config=tests/plugins/ring_config.py:replace",
          "--config.model.scale=0.3"]
  bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  ok = launcher_batch.run([sys.executable, *args, f"--workdir={tmp_path / 'ok'}"], ROOT,
                           env=dict(bare, PYTHONPATH=str(ROOT / "tests")))
  missing = subprocess.run([sys.executable, *args, f"--workdir={tmp_path / 'missing'}"],
                           cwd=ROOT, env=bare, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert json.loads((tmp_path / "ok" / "config.json").read_text())["model"]["scale"] == 0.3
  assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1] == (
      "error: Cannot import the model module 'plugins.mean_family' (No module named "
      "'plugins').")


def test_a_run_from_before_a_shared_field_existed_loads_and_continues(linreg_run, tmp_path):
  """A config.json written before `curation` existed reads back as that run (curation none):
  its models load, and the same command is its continuation, not "a different config"."""
  import json
  import shutil
  old = tmp_path / "old"
  shutil.copytree(linreg_run, old)
  saved = json.loads((old / "config.json").read_text())
  del saved["curation"]
  (old / "config.json").write_text(json.dumps(saved))
  assert inference.load_generation(old, 1).config.curation.rule == "none"
  config = load_config("linreg", "replace,smoke")
  assert experiment.train_and_evaluate(config, old) == read_metrics(linreg_run)
  config.curation.rule = "top"  # curation asked for now: a different run
  with pytest.raises(Exception, match="fields curation differ"):
    experiment.check_same_run(config, old)
