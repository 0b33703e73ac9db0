"""Every config in configs/ runs end to end in its ':smoke' variant, with the metrics it
always gave (tests/golden_metrics.json, made by tools/make_golden.py): bitwise."""
import json

import numpy as np
import pytest

from collapse_jax import experiment

from conftest import CONFIGS, ROOT, load_config, read_metrics

ALL = sorted(p.stem for p in CONFIGS.glob("*.py"))
GOLDEN = json.loads((ROOT / "tests" / "golden_metrics.json").read_text())


def assert_golden(name: str, rows: list[dict]) -> None:
  """``rows`` equal the golden rows of ``name`` exactly (every metric the golden file has;
  a new metric beside them is allowed, a moved or missing one is not)."""
  golden = GOLDEN[name]
  assert len(rows) == len(golden)
  for row, want in zip(rows, golden):
    got = {k: row.get(k) for k in want}
    assert got == want, f"{name}: {got} != golden {want}"


@pytest.mark.parametrize("name", ALL)
def test_smoke_variant_runs_end_to_end(name, tmp_path):
  config = load_config(name)
  rows = experiment.train_and_evaluate(config, tmp_path)
  assert rows == read_metrics(tmp_path)
  assert len(rows) == config.num_generations * config.num_seeds
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert (tmp_path / "checkpoints" / "models" / str(config.num_generations - 1)).exists()
  assert list((tmp_path / "plots").glob("*.png"))
  if name in GOLDEN:
    assert_golden(name, rows)


def test_quickstart_first_generations_are_golden(tmp_path):
  """The README's main job (policy accumulate), generations 0..2, as the golden file has it."""
  import sys
  sys.path.insert(0, str(ROOT / "tools"))
  import make_golden
  rows = experiment.train_and_evaluate(make_golden.quickstart_config(), tmp_path)
  assert_golden(make_golden.QUICKSTART, rows)
