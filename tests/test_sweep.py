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


def test_scalar_points_run_side_by_side_equal_runs_alone_and_continue_alone(tmp_path,
                                                                           monkeypatch):
  """Bandwidths are inputs of one compiled loop: each point's metrics are its run alone,
  bitwise, and its checkpoints (its replicates' slice of the loop's) continue alone."""
  together = []
  side_by_side = experiment.train_and_evaluate_side_by_side
  monkeypatch.setattr(experiment, "train_and_evaluate_side_by_side",
                      lambda configs, *a, **k: together.append(len(configs)) or
                      side_by_side(configs, *a, **k))
  config = load_config("kde_moons:replace")
  axes = sweep.parse_axes(config, ["model.bandwidth=0.1,0.3"])
  sweep.run(config, axes, tmp_path / "sweep")
  assert [n for n in together if n > 1] == [2]
  for name, point, _ in sweep.points(config, axes):
    assert read_metrics(tmp_path / "sweep" / name) == experiment.train_and_evaluate(
        point, tmp_path / "alone" / name)
  point.num_generations += 1
  assert experiment.train_and_evaluate(point, tmp_path / "sweep" / name) == (
      experiment.train_and_evaluate(point, tmp_path / "longer"))
  sweep.run(config, axes, tmp_path / "sweep")  # done points: each resumes alone, as a no-op
  assert [n for n in together if n > 1] == [2, 2]


def test_a_field_that_sets_a_shape_is_refused_side_by_side_before_any_write(tmp_path):
  """mix_lambda sets the synthetic rows' count: its points must run one after another."""
  configs = [load_config("gaussian:mix") for _ in range(2)]
  configs[1].policy.mix_lambda = 0.5
  with pytest.raises(experiment.NotSideBySide, match="policy.mix_lambda is not a traced input"):
    experiment.train_and_evaluate_side_by_side(
        configs, [tmp_path / "a", tmp_path / "b"], ("policy.mix_lambda",))
  configs[1].seed = 7
  with pytest.raises(experiment.NotSideBySide, match="differ in more than policy.mix_lambda"):
    experiment.train_and_evaluate_side_by_side(
        configs, [tmp_path / "a", tmp_path / "b"], ("policy.mix_lambda",))
  assert not list(tmp_path.iterdir())
