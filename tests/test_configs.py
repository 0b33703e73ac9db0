"""Every experiment in configs/ runs end to end in its ':smoke' variant under the policies
tools/make_golden.py lists, with the metrics it always gave (tests/golden_metrics.json, made by tools/make_golden.py): within the per-metric
tolerances of tests/golden_tolerances.json, set by tools/measure_drift.py from the drift
measured under other XLA:CPU instruction sets and reduction orders (bitwise on one machine is
tests/test_determinism.py's job)."""
import json
import sys

import numpy as np
import pytest

from collapse_jax import experiment

from conftest import CONFIGS, MNIST_IS_STAND_IN, ROOT, load_config, read_metrics

GOLDEN = json.loads((ROOT / "tests" / "golden_metrics.json").read_text())
TOLERANCES = json.loads((ROOT / "tests" / "golden_tolerances.json").read_text())["tolerances"]
sys.path.insert(0, str(ROOT / "tools"))


import make_golden  # noqa: E402  (tools/)


def tolerance(name: str, metric: str, tolerances: dict = TOLERANCES) -> tuple[float, float]:
  """(rtol, atol) of ``metric`` in golden entry ``name``: an entry "<name>/<metric>" first,
  then the metric's own; a metric with neither is compared exactly (0, 0)."""
  t = tolerances.get(f"{name}/{metric}", tolerances.get(metric, {"rtol": 0.0, "atol": 0.0}))
  return t["rtol"], t["atol"]


def assert_golden(name: str, rows: list[dict], golden: dict = GOLDEN,
                  tolerances: dict = TOLERANCES) -> None:
  """``rows`` match the golden rows of ``name``: every metric the golden file has, each
  within |got - golden| <= atol + rtol * |golden| (np.isclose's rule) of its tolerance; a
  new metric beside them is allowed, a missing one or one moved further is not."""
  want_rows = golden[name]
  assert len(rows) == len(want_rows), f"{name}: {len(rows)} rows, golden {len(want_rows)}"
  for row, want in zip(rows, want_rows):
    for metric, value in want.items():
      got, (rtol, atol) = row.get(metric), tolerance(name, metric, tolerances)
      where = f"{name} generation {want.get('generation')} seed {want.get('seed')}: {metric}"
      assert got is not None, f"{where} missing (golden {value!r})"
      assert abs(got - value) <= atol + rtol * abs(value), (
          f"{where} = {got!r}, golden {value!r}: |diff| {abs(got - value):.3g} > "
          f"atol {atol:g} + rtol {rtol:g} x |golden| (tests/golden_tolerances.json)")


def test_golden_runs_cover_every_config_file():
  """A new experiment file gets a golden entry; configs/ffhq_accumulate.py (the user's own
  command) is configs/ffhq.py:accumulate."""
  assert set(make_golden.golden_names()) == set(GOLDEN)
  covered = {name.partition(":")[0] for name in make_golden.RUNS}
  assert covered | {"ffhq_accumulate"} == {p.stem for p in CONFIGS.glob("*.py")}
  assert (load_config("ffhq_accumulate").to_json(sort_keys=True)
          == load_config("ffhq:accumulate").to_json(sort_keys=True))


@pytest.mark.parametrize("name", make_golden.RUNS)
def test_smoke_variant_runs_end_to_end(name, smoke_run):
  """The suite's shared run of ``name`` (made here, or by another test that needed it)."""
  config = load_config(name)
  workdir, rows = smoke_run(name)
  assert rows == read_metrics(workdir)
  assert len(rows) == config.num_generations * config.num_seeds
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert (workdir / "checkpoints" / "models" / str(config.num_generations - 1)).exists()
  if MNIST_IS_STAND_IN and config.data.get("name") == "mnist":
    pytest.skip("ran end to end on the MNIST stand-in; the golden numbers are the real "
                "dataset's (../shared/data/mnist or $COLLAPSE_JAX_MNIST)")
  assert_golden(name, rows)


def test_quickstart_first_generations_are_golden(tmp_path):
  """The README's main job (policy accumulate), generations 0 and 1, as the golden file has them."""
  rows = experiment.train_and_evaluate(make_golden.quickstart_config(), tmp_path)
  assert_golden(make_golden.QUICKSTART, rows)


def test_assert_golden_fails_beyond_tolerance_and_passes_within():
  """No config run: golden rows moved by half their tolerance pass, by twice it fail; a
  metric without a tolerance (a count) fails on any move."""
  name = "linreg:accumulate"
  rtol, atol = tolerance(name, "test_error")
  assert rtol > 0
  want = GOLDEN[name]
  def moved(metric, by):
    return [dict(r, **{metric: r[metric] + by(r[metric])}) for r in want]
  assert_golden(name, [dict(r) for r in want])
  assert_golden(name, moved("test_error", lambda v: 0.5 * (atol + rtol * abs(v))))
  with pytest.raises(AssertionError, match="test_error"):
    assert_golden(name, moved("test_error", lambda v: 2 * (atol + rtol * abs(v))))
  with pytest.raises(AssertionError, match="train_examples"):
    assert_golden(name, moved("train_examples", lambda v: 1e-9 * v))
  with pytest.raises(AssertionError, match="moved_metric"):
    golden = {name: [dict(r, moved_metric=1.0) for r in want]}
    assert_golden(name, [dict(r, moved_metric=1.0 + 1e-12) for r in want], golden)


def test_reported_cross_machine_drift_is_within_tolerance():
  """The drift another machine reported (one float32 ulp on linreg's test_error, ~7e-11
  relative on digits_vae's fd_classifier) passes."""
  rows = [dict(r) for r in GOLDEN["linreg:accumulate"]]
  assert rows[0]["test_error"] == 0.17765238881111145
  rows[0]["test_error"] = 0.17765240371227264
  assert_golden("linreg:accumulate", rows)
  rows = [dict(r) for r in GOLDEN["digits_vae:accumulate"]]
  assert rows[0]["fd_classifier"] == 19.60437773705629
  rows[0]["fd_classifier"] = 19.604377735652687
  assert_golden("digits_vae:accumulate", rows)


def test_tolerances_are_the_measured_drift_times_the_margin():
  """tests/golden_tolerances.json is what tools/measure_drift.py derives from
  tests/golden_drift.json (so every number in it has a measurement behind it)."""
  import measure_drift
  drift = json.loads(measure_drift.DRIFT.read_text())
  saved = json.loads(measure_drift.TOLERANCES.read_text())
  derived = measure_drift.tolerances(drift, saved["margin"], saved["floor_rtol"])
  assert saved["tolerances"] == derived
  for variant in drift["variants"].values():
    assert set(variant["drift"]) == set(GOLDEN)


def test_make_golden_same_as_tells_a_bitwise_move_from_none(tmp_path, monkeypatch, capsys):
  """A refactor's check: numbers written with --out compare `same` with --same_as, and a
  last-bit change is `MOVED` with exit 1 (the tolerant golden test would pass it)."""
  value = [0.17765238881111145]
  monkeypatch.setattr(make_golden, "golden_rows", lambda name: [{"test_error": value[0]}])
  path = tmp_path / "before.json"

  def run(*args):
    monkeypatch.setattr(sys, "argv", ["make_golden.py", "--only", "linreg:replace", *args])
    try:
      make_golden.main()
    except SystemExit as e:
      return e.code
    return 0
  assert run("--out", str(path)) == 0
  assert json.loads(path.read_text()) == {"linreg:replace": [{"test_error": value[0]}]}
  assert run("--same_as", str(path)) == 0
  assert capsys.readouterr().out.splitlines()[-1] == "linreg:replace same"
  value[0] = float(np.nextafter(np.float32(value[0]), np.float32(1)))  # one float32 ulp
  assert run("--same_as", str(path)) == 1
  assert capsys.readouterr().out.splitlines()[-1] == "linreg:replace MOVED"
