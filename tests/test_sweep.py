"""launch/sweep.py: the product of value lists of config fields, each point a normal run,
slices for schedulers, a report of whatever is done; every bad axis one sentence."""
import json

import pytest

from collapse_jax import experiment, sweep
from collapse_jax.errors import UserError

from conftest import ROOT, load_config, read_metrics


@pytest.mark.parametrize("specs,words", [
    ([], "A sweep needs at least one --sweep"),
    (["policy.mix_lambda"], "give a field and a comma-separated list of values"),
    (["policy.mix_lambda="], "give a field and a comma-separated list of values"),
    (["policy.mix_lambda=0,,1"], "give a field and a comma-separated list of values"),
    (["policy.mix_lamda=0,1"], "config.policy has no field 'mix_lamda'; did you mean "
     "policy.mix_lambda?"),
    (["model.nothing=1,2"], "config.model has no field 'nothing'."),
    (["policy=0,1"], "config.policy is a group of fields"),
    (["num_seeds=2,two"], "config.num_seeds takes int values; 'two' is not an integer."),
    (["policy.mix_lambda=0.5,0.5"], "a value is given twice"),
    (["seed=0,1", "seed=2"], "--sweep names config.seed twice"),
    (["seed=" + ",".join(map(str, range(9))), "num_seeds=" + ",".join(map(str, range(1, 9)))],
     "The sweep has 72 points, above 64; pass --allow_large"),
])
def test_a_bad_axis_is_one_sentence(specs, words):
  with pytest.raises(UserError) as error:
    sweep.parse_axes(load_config("gaussian:mix"), specs)
  assert words in str(error.value) and "\n" not in str(error.value)


def test_points_are_runs_slices_fill_in_and_the_report_marks_the_missing(tmp_path):
  config = load_config("gaussian:mix")
  axes = sweep.parse_axes(config, ["policy.mix_lambda=0.5,inf"])
  assert axes[0].values == (0.5, float("inf"))
  sweep.run(config, axes, tmp_path, point=1, num_points=2)  # the second point only
  assert not (tmp_path / "policy.mix_lambda=0.5").exists()
  table = (tmp_path / "sweep.md").read_text()
  assert "| policy.mix_lambda=0.5 | not run yet |" in table
  assert "| policy.mix_lambda=inf | done |" in table
  page = sweep.run(config, axes, tmp_path, point=0, num_points=2)
  assert "2 of 2 points done" in page.read_text()
  assert (tmp_path / "report.html").exists() and (tmp_path / "sweep.png").exists()
  # A point is the run of the same config by itself, bitwise.
  config.policy.mix_lambda = 0.5
  alone = experiment.train_and_evaluate(config, tmp_path / "alone")
  assert read_metrics(tmp_path / "policy.mix_lambda=0.5") == alone
  assert json.loads((tmp_path / "policy.mix_lambda=inf" / "config.json").read_text()
                    )["policy"]["mix_lambda"] == float("inf")


def test_the_launcher_answers_a_bad_axis_and_a_bad_slice_in_one_sentence(tmp_path):
  from launcher_batch import run_many
  base = ["launch/sweep.py", "--config=configs/gaussian.py:mix,smoke", f"--workdir={tmp_path}"]
  bad_axis, bad_slice = run_many([
      ([*base, "--sweep=policy.mix_lambda=0,half"], ROOT),
      ([*base, "--sweep=seed=0,1", "--point=2", "--num_points=2"], ROOT)])
  for result, line in (
      (bad_axis, "error: --sweep=policy.mix_lambda=0,half: config.policy.mix_lambda takes "
                 "float values; 'half' is not a number."),
      (bad_slice, "error: --point must be in [0, 2), got 2.")):
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == line
  assert not list(tmp_path.iterdir())
