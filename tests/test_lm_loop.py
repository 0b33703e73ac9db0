"""The TinyStories smoke config in the full loop: a resumed run equals an uninterrupted one
bitwise, and 8 fake devices give the metrics of 1.

Policy replace: its pool layout does not depend on num_generations, so the 1-generation run,
its continuation and the straight run share one compiled program (the suite's compilation
cache; the same program as test_configs' smoke run of this config).
"""
import json
import os
import sys

import numpy as np
import pytest

from collapse_jax import experiment

import launcher_batch
from conftest import ROOT, load_config, read_metrics

NAME = "tinystories:replace"

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
from conftest import load_config
from collapse_jax import experiment
rows = experiment.train_and_evaluate(load_config({name!r}), {workdir!r})
print("ROWS" + json.dumps({{"devices": jax.device_count(), "rows": rows}}))
"""


@pytest.fixture
def straight(smoke_run):
  """The suite's shared run of NAME: (rows, workdir)."""
  workdir, rows = smoke_run(NAME)
  return rows, workdir


def test_resumed_run_equals_uninterrupted_one(straight, tmp_path):
  rows, workdir = straight
  short = load_config(NAME)
  short.num_generations = 1
  experiment.train_and_evaluate(short, tmp_path)
  assert experiment.train_and_evaluate(load_config(NAME), tmp_path) == rows
  assert read_metrics(tmp_path) == rows
  assert {"distinct_2", "eos_frac", "retok_diff_frac", "test_perplexity"} <= set(rows[0])
  stories = sorted(p.name for p in (tmp_path / "stories").iterdir())
  assert stories == ["generation_000.txt", "generation_001.txt"]
  assert (tmp_path / "stories" / "generation_001.txt").read_text() == (
      workdir / "stories" / "generation_001.txt").read_text()
  assert len(list((tmp_path / "tokenizer").glob("spm-*.model"))) == 1


def test_eight_devices_match_one(straight, tmp_path):
  rows, _ = straight
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  code = SCRIPT.format(tests=str(ROOT / "tests"), cache=str(ROOT / ".pytest_cache" / "jax"),
                       name=NAME, workdir=str(tmp_path))
  out = launcher_batch.run([sys.executable, "-c", code], env=dict(os.environ, XLA_FLAGS=flags),
                           timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split("ROWS")[-1])
  assert result["devices"] == 8 and len(result["rows"]) == len(rows)
  for a, b in zip(rows, result["rows"]):
    assert a.keys() == b.keys()
    for k in a:
      # The pool's rows are sharded: float32 sums regroup across devices.
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
