"""Every config in configs/ runs end to end in its ':smoke' variant."""
import numpy as np
import pytest

from collapse_jax import experiment

from conftest import CONFIGS, load_config, read_metrics

# Configs whose smoke run belongs to another test file (slow neural families run there).
ALL = sorted(p.stem for p in CONFIGS.glob("*.py"))


@pytest.mark.parametrize("name", ALL)
def test_smoke_variant_runs_end_to_end(name, tmp_path):
  config = load_config(name)
  experiment.train_and_evaluate(config, tmp_path)
  rows = read_metrics(tmp_path)
  assert len(rows) == config.num_generations * config.num_seeds
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert (tmp_path / "checkpoints" / "models" / str(config.num_generations - 1)).exists()
  assert list((tmp_path / "plots").glob("*.png"))
