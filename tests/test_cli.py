"""launch/main.py end to end: bad input gets one sentence, exit 2, and an untouched workdir."""
import hashlib
import os
import pathlib
import shutil
import sys

import pytest

from conftest import ROOT, read_metrics
import launcher_batch

MAIN = [sys.executable, str(ROOT / "launch" / "main.py")]


def _main(*args, cwd=ROOT, env=None):
  return launcher_batch.run(MAIN + list(args), cwd=cwd, env=env)


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


BAD_CONFIGS = [
    ("--config.policy.name=bogus", "Unknown policy 'bogus'"),
    ("--config.model.name=bogus", "Unknown model 'bogus'"),
    ("--config.data.source=bogus", "Unknown data source 'bogus'"),
    ("--config.policy.mix_lambda=-0.5", "mix_lambda must be >= 0"),
    ("--config.num_generations=0", "num_generations must be at least 1"),
    ("--config.data.num_rows=11", "num_rows T > dim d + 1"),
    ("--config.data.max_dim=4", "data.max_dim (4) must be at least data.dim (10)"),
    ("--config.curation.rule=top", "linreg model has no log-likelihood"),
]
MISTAKES = [
    (["--config=configs/linreg.py:smoke", "--config.seed=abc"],
     "--config.seed=abc: config.seed takes an integer, not 'abc'."),
    (["--config=configs/linreg.py:smoke", "--config.policy.mix_lambda=half"],
     "config.policy.mix_lambda takes a number, not 'half'."),
    (["--config=configs/linreg_nope.py:smoke"],
     "The config file configs/linreg_nope.py (from --config=configs/linreg_nope.py:smoke) "
     "does not exist."),
    (["--config=configs/linreg.py:replace,smok"], "Unknown config variant 'smok'; known"),
    (["--config=configs/linreg.py:replace,lambda=0.5"],
     "A mix lambda (lambda=0.5) only applies to policy mix, not replace."),
    (["--config=configs/cifar10.py:edm,smoke"],
     "Config variant 'edm' needs its key: write process=edm."),
    (["--config=configs/gaussian.py:mix,0.5"],
     "A bare number (0.5) in the config variants is ambiguous; write lambda=0.5."),
    (["--config=configs/tinystories.py:temperature=warm"],
     "Config variant temperature=warm needs a number."),
    (["--config=configs/linreg.py:process=edm"],
     "Unknown config variant key 'process'; this config takes lambda=, policy= and smoke."),
    (["--config=configs/cifar10.py:process=vae"],
     "Config variant process=vae is not one of ddpm, edm, otcfm."),
    (["--config=configs/linreg.py:replace,accumulate"],
     "Config variant policy given twice ('replace' and 'accumulate')."),
    (["--config=configs/linreg_replace.py:smoke", "--config.num_generations=0"],
     "num_generations must be at least 1"),
    (["--config=configs/linreg.py:smoke", "--config.model.nme=ols"],
     "--config.model.nme: config.model has no field 'nme'; did you mean config.model.name?"),
    (["--config=configs/linreg.py:smoke", "--config.mesh.data=3"],
     "mesh.data=3 does not fit the 1 device of this machine"),
    (["--config=configs/linreg.py:smoke", "extra"], "unexpected argument extra;"),
    (["--config=configs/linreg.py:smoke", "--overwrit"],
     "Unknown flag --overwrit; did you mean --overwrite?"),
    (["--config=configs/curation.py:smoke", "--config.curation.factor=1.5"],
     "config.curation.factor takes an integer, not '1.5'."),
    # A pool of 10^11 rows: terabytes, more than any machine (tests/test_bad_inputs.py
    # checks the bound itself).
    (["--config=configs/linreg.py:accumulate,smoke", "--config.num_generations=1000000000",
      "--config.generations_per_chunk=1"], "generation per compiled chunk) needs at least"),
    (["--config=configs/"], "The config file configs/ (from --config=configs/) is a folder;"),
    (["--config=README.md"], "--config=README.md: a config file is Python that defines"),
    (["--config=collapse_jax/errors.py:smoke"], "collapse_jax/errors.py has no get_config: a"),
]
MISTAKE_IDS = ["not_an_int", "wrong_type", "missing_config_file", "unknown_variant",
               "lambda_without_mix", "bare_choice", "bare_number", "number_not_a_number",
               "unknown_key", "unknown_choice", "two_policies", "old_name", "unknown_field",
               "mesh_too_big", "positional", "unknown_flag", "curation_factor_not_an_int",
               "pool_larger_than_memory", "config_is_a_folder", "config_not_python",
               "config_without_get_config"]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
  """Every refused command line of this file, each run as its own ``python launch/main.py``
  process (forked from one warm interpreter, `launcher_batch`): key -> (result, workdir,
  digest of the workdir before the command, or None where it did not exist)."""
  root = tmp_path_factory.mktemp("refused")
  cases = {}
  for i, (override, _) in enumerate(BAD_CONFIGS):
    workdir = root / f"config{i}" / "run"
    cases[override] = (["--config=configs/linreg.py:replace,smoke", f"--workdir={workdir}",
                        override], workdir, None)
  for (args, _), name in zip(MISTAKES, MISTAKE_IDS):
    workdir = root / name / "run"
    workdir.mkdir(parents=True)
    (workdir / "notes.txt").write_text("mine")
    cases[name] = ([*args, f"--workdir={workdir}"], workdir, _tree_digest(workdir))
  cases["no_workdir"] = (["--config=configs/linreg.py:smoke"], None, None)
  workdir = root / "toy" / "r"
  cases["toy"] = (["--config=configs/kde_moons.py:replace,smoke", f"--workdir={workdir}",
                   "--config.data.name=spirals"], workdir, None)
  results = launcher_batch.run_many([([MAIN[1], *args], ROOT)
                                     for args, _, _ in cases.values()])
  return {key: (result, workdir, digest)
          for (key, (_, workdir, digest)), result in zip(cases.items(), results)}


@pytest.mark.parametrize("override,message", BAD_CONFIGS)
def test_bad_config_is_refused_before_touching_the_workdir(refused, override, message):
  result, workdir, _ = refused[override]
  _assert_refused(result, message)
  assert not workdir.exists()


@pytest.mark.parametrize("args,message", MISTAKES, ids=MISTAKE_IDS)
def test_command_line_mistake_is_one_sentence_and_exit_2(refused, request, args, message):
  result, workdir, before = refused[request.node.callspec.id]
  _assert_refused(result, message)
  assert _tree_digest(workdir) == before


def test_missing_required_flag_is_named(refused):
  _assert_refused(refused["no_workdir"][0], "--workdir is required.")


def test_a_home_folder_in_a_flag_value_is_expanded_as_the_shell_would(tmp_path):
  """``--workdir=~/x`` (the shell leaves that ``~`` alone) means the home folder's x, not a
  folder named ``~`` in the current one; here x is a file, so the refusal names the path."""
  (tmp_path / "home").mkdir()
  (tmp_path / "home" / "x").write_text("mine")
  args = [MAIN[1], f"--config={ROOT}/configs/linreg.py:replace,smoke", "--workdir=~/x"]
  result, = launcher_batch.run_many([(args, tmp_path)],
                                    env=dict(os.environ, HOME=str(tmp_path / "home")))
  _assert_refused(result, f"The workdir {tmp_path / 'home' / 'x'} is a file")
  assert not (tmp_path / "~").exists()


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


def test_an_old_config_name_runs_as_its_new_spelling_after_one_note(refused):
  result = refused["old_name"][0]
  notes = [l for l in result.stderr.splitlines() if l.startswith("note: ")]
  assert notes == ["note: configs/linreg_replace.py:smoke is an old config name; running "
                   "configs/linreg.py:replace,smoke (the old per-policy files are gone: use "
                   "the new spelling)."]


def test_config_variants_are_policy_words_size_switches_and_key_values(config_loader):
  assert config_loader("linreg", None).policy.name == "accumulate"  # the default
  assert (config_loader("linreg:policy=replace").to_json()
          == config_loader("linreg:replace").to_json())
  mix = config_loader("kde_moons", "mix,lambda=inf,smoke").policy
  assert (mix.name, mix.mix_lambda) == ("mix", float("inf"))
  lm = config_loader("tinystories", "cpu,temperature=0.7,preset=gpt2-smoke,prompt=bos").model
  assert (lm.temperature, lm.preset, lm.prompt) == (0.7, "gpt2-smoke", "bos")


def test_unknown_toy_dataset_is_refused(refused):
  _assert_refused(refused["toy"][0], "Unknown 2-D toy 'spirals'")


def test_workdir_of_another_config_is_refused_continuation_resumes_overwrite_restarts(tmp_path):
  workdir = tmp_path / "run"
  first = _main("--config=configs/gaussian.py:replace,smoke", f"--workdir={workdir}",
                env=dict(os.environ, COLLAPSE_JAX_PLOTS="1"))  # (the suite skips figures)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "generation 2 done (3 of 3)" in first.stderr  # progress a person can follow
  # Its figures: one per metric, and the 2-D samples' scatter row.
  assert (workdir / "plots" / "log_det_ratio.png").exists()
  assert (workdir / "plots" / "samples2d.png").exists()
  before = _tree_digest(workdir)

  other = _main("--config=configs/gaussian.py:accumulate,smoke", f"--workdir={workdir}")
  _assert_refused(other, "holds a run of a different config (fields policy differ)")
  assert _tree_digest(workdir) == before

  longer = _main("--config=configs/gaussian.py:replace,smoke", f"--workdir={workdir}",
                 "--config.num_generations=5")
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert "Resuming" in longer.stderr
  assert [r["generation"] for r in read_metrics(workdir)][-1] == 4

  fresh = _main("--config=configs/gaussian.py:accumulate,smoke", f"--workdir={workdir}",
                "--overwrite")
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  assert max(r["generation"] for r in read_metrics(workdir)) == 2


def test_unreadable_checkpoint_is_named_not_silently_restarted(smoke_run, tmp_path):
  workdir = tmp_path / "run"  # a finished run of the config (the shared one, copied)
  shutil.copytree(smoke_run("gaussian:replace")[0], workdir)
  step = workdir / "checkpoints" / "loop" / "3"
  for f in step.rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  before = _tree_digest(workdir)
  result = _main("--config=configs/gaussian.py:replace,smoke", f"--workdir={workdir}",
                 "--config.num_generations=4")
  _assert_refused(result, f"The checkpoint {step} is damaged")
  assert _tree_digest(workdir) == before


def test_report_compares_runs(smoke_run, tmp_path):
  # Finished runs of the two configs (the shared ones: the report only reads them).
  runs = [smoke_run(f"gaussian:{policy}")[0] for policy in ("replace", "accumulate")]
  out = tmp_path / "cmp"
  result = launcher_batch.run([sys.executable, str(ROOT / "launch" / "report.py"),
                               *map(str, runs), f"--out={out}"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert (out / "comparison.png").stat().st_size > 10_000
  table = (out / "comparison.md").read_text()
  assert "| replace | log_det_ratio |" in table
  assert "| accumulate | trace_ratio |" in table


def test_every_old_config_name_has_one_new_spelling():
  from collapse_jax import variants
  from collapse_jax.loop import policies
  assert set(variants._OLD_POLICIES) <= set(policies.NAMES)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    for name in ("linreg", "gaussian", "kde_moons", "mnist_vae", "molecules", "tinystories"):
      for policy in ("replace", "accumulate", "accumulate_subsample"):
        assert (variants.renamed_config(f"configs/{name}_{policy}.py:smoke")
                == f"configs/{name}.py:{policy},smoke")
    assert (variants.renamed_config("configs/cifar10_otcfm_mix.py")
            == "configs/cifar10.py:process=otcfm,mix")
    assert variants.renamed_config("configs/toy_flow_replace.py") == "configs/toy_flow.py:replace"
    for current_or_unknown in ("configs/ffhq_accumulate.py", "configs/linreg.py:smoke",
                               "configs/linreg_nope.py", "configs/nope_replace.py"):
      assert variants.renamed_config(current_or_unknown) is None
  finally:
    os.chdir(cwd)
