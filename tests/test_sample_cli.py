"""Loading generation g's model from a workdir (the run's product) and sampling from it."""
import sys

import jax
import numpy as np
import pytest

from collapse_jax import experiment, inference, validate

from conftest import ROOT
from launcher_batch import run_many

SAMPLE = [sys.executable, str(ROOT / "launch" / "sample.py")]


@pytest.fixture
def gaussian_run(smoke_run):
  """A finished gaussian:replace smoke run (shared by the whole suite: only read here)."""
  return smoke_run("gaussian:replace")


def test_restored_generation_is_the_trained_one(gaussian_run):
  workdir, rows = gaussian_run
  for g in (0, 2):
    gen = inference.load_generation(workdir, g)
    metrics = jax.vmap(lambda s, t: gen.loop.model.evaluate(s, t, jax.random.PRNGKey(0)))(
        gen.state, gen.tasks)
    for seed in range(gen.config.num_seeds):
      row = next(r for r in rows if r["generation"] == g and r["seed"] == seed)
      np.testing.assert_allclose(metrics["test_nll"][seed], row["test_nll"], rtol=1e-5)
  samples = inference.sample_generation(gen, 500, seed_index=1)
  # Generation 2's fitted Gaussian: its samples have the fitted mean.
  np.testing.assert_allclose(samples["x"].mean(0), gen.state["mu"][1], atol=0.2)


def test_missing_generation_is_one_sentence(gaussian_run):
  workdir, _ = gaussian_run
  with pytest.raises(validate.ConfigError, match="has no model of generation 7; it has 0, 1, 2"):
    inference.load_generation(workdir, 7)


def test_samples_written_as_npz(gaussian_run, tmp_path):
  sys.path.insert(0, str(ROOT / "launch"))
  import sample
  gen = inference.load_generation(gaussian_run[0], 1)
  sample.write(gen, inference.sample_generation(gen, 50), tmp_path / "s.npz")
  assert np.load(tmp_path / "s.npz")["x"].shape == (50, 2)


def test_sample_cli_writes_a_scatter_and_refuses_bad_input(gaussian_run, tmp_path):
  workdir, _ = gaussian_run
  # Two `python launch/sample.py` processes, forked from one warm interpreter.
  ok, bad, huge = run_many([([SAMPLE[1], f"--workdir={workdir}", *a], ROOT) for a in (
      ["--generation=1", "--num=50", f"--out={tmp_path / 's.png'}"],
      ["--generation=1", "--seed_index=5", f"--out={tmp_path / 'b.png'}"],
      ["--generation=1", "--num=1000000000000", f"--out={tmp_path / 'h.npz'}"])])
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert (tmp_path / "s.png").stat().st_size > 1000
  assert bad.returncode == 2 and "--seed_index must be in [0, 2)" in bad.stderr
  # 10^12 2-D points: 7,450.6 GiB, refused before sampling (not killed part-way).
  assert huge.returncode == 2, huge.stderr[-2000:]
  assert huge.stderr.strip().splitlines()[-1].startswith(
      "error: --num=1000000000000 needs at least 7,450.6 GiB at once, more than the")
  for result, out in ((bad, "b.png"), (huge, "h.npz")):
    assert "Traceback" not in result.stderr and not (tmp_path / out).exists()
