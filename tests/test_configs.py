"""Every config in configs/ runs end to end in its ':smoke' variant, with the metrics it
always gave (tests/golden_metrics.json, made by tools/make_golden.py): bitwise."""
import json

import numpy as np
import pytest

from collapse_jax import experiment

from conftest import CONFIGS, ROOT, load_config, read_metrics

GOLDEN = json.loads((ROOT / "tests" / "golden_metrics.json").read_text())


def _distinct_smoke_configs() -> dict[str, list[str]]:
  """Config files grouped by their ':smoke' config (an experiment file's default policy and
  its ``<experiment>_<policy>.py`` alias are the same run): first name -> all names."""
  groups: dict[str, list[str]] = {}
  for name in sorted(p.stem for p in CONFIGS.glob("*.py")):
    groups.setdefault(load_config(name).to_json(sort_keys=True), []).append(name)
  return {names[0]: names for names in groups.values()}


GROUPS = _distinct_smoke_configs()


def assert_golden(name: str, rows: list[dict]) -> None:
  """``rows`` equal the golden rows of ``name`` exactly (every metric the golden file has;
  a new metric beside them is allowed, a moved or missing one is not)."""
  golden = GOLDEN[name]
  assert len(rows) == len(golden)
  for row, want in zip(rows, golden):
    got = {k: row.get(k) for k in want}
    assert got == want, f"{name}: {got} != golden {want}"


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_smoke_variant_runs_end_to_end(name, tmp_path):
  config = load_config(name)
  rows = experiment.train_and_evaluate(config, tmp_path)
  assert rows == read_metrics(tmp_path)
  assert len(rows) == config.num_generations * config.num_seeds
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert (tmp_path / "checkpoints" / "models" / str(config.num_generations - 1)).exists()
  assert list((tmp_path / "plots").glob("*.png"))
  for same in GROUPS[name]:
    if same in GOLDEN:
      assert_golden(same, rows)


def test_quickstart_first_generations_are_golden(tmp_path):
  """The README's main job (policy accumulate), generations 0..2, as the golden file has it."""
  import sys
  sys.path.insert(0, str(ROOT / "tools"))
  import make_golden
  rows = experiment.train_and_evaluate(make_golden.quickstart_config(), tmp_path)
  assert_golden(make_golden.QUICKSTART, rows)
