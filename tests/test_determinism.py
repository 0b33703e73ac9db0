"""Same config and seed give the same numbers, bitwise: after resume, across chunking and
pool capacity, and replicate by replicate."""
import json
import shutil

import jax
import numpy as np
import pytest

from collapse_jax import experiment, rng, validate
from collapse_jax.loop import generation
from collapse_jax.parallel.mesh import make_mesh

from conftest import load_config, read_metrics

CASES = ["linreg:accumulate", "linreg:accumulate_subsample", "gaussian:replace",
         "kde_moons:accumulate_subsample"]


def _run(config, workdir, **kw):
  experiment.train_and_evaluate(config, workdir, **kw)
  return read_metrics(workdir)


@pytest.mark.parametrize("name", CASES)
def test_rerun_continuation_and_chunking_are_bitwise_identical(name, smoke_run, tmp_path):
  """Runs that compile different programs (one scan of 3 generations, 3 scans of one, a
  2-generation pool continued) give the shared smoke run's numbers bitwise. (A rerun of the
  same program is not repeated: any run-to-run nondeterminism breaks these equalities too.)"""
  config = load_config(name)
  assert config.num_generations == 3 and config.generations_per_chunk == 0
  # The smoke run (3 generations in one chunk), made once for the suite.
  straight = read_metrics(smoke_run(name)[0])

  chunked = load_config(name)
  chunked.generations_per_chunk = 1
  assert straight == _run(chunked, tmp_path / "chunked")

  # A 2-generation run (a smaller pool) continued to 3 generations.
  short = load_config(name)
  short.num_generations = 2
  _run(short, tmp_path / "continued")
  assert straight == _run(config, tmp_path / "continued")


@pytest.mark.parametrize("name", ["linreg:replace", "gaussian:accumulate", "kde_moons:replace"])
def test_vmapped_seeds_equal_single_runs(name):
  """Replicate s of a num_seeds=3 run is the single run with seed s.

  Not bitwise: XLA's CPU matmul with a batch of 3 rounds differently from the batch-1 one.
  Generation 0's fit agrees to 1e-6 in relative norm (element-wise rtol is meaningless
  for entries near 0). Later generations train on the previous one's samples, so the
  rounding compounds (replace: ~3e-7 per generation), and metrics that subtract nearly
  equal numbers (||w - w*||^2) amplify it ~10x: those are held to 1e-5. Mixing seeds up
  would show as O(1) differences.
  """
  config = load_config(name)
  layout = validate.policy_of(config).layout(config.num_generations)
  compiled = {}  # one program per number of seeds: the single runs differ in their root only

  def run(seed, num_seeds):
    roots = rng.seed_keys(seed, num_seeds)
    if num_seeds not in compiled:
      loop = experiment.build_loop(config, layout)
      consts = loop.source.consts()
      compiled[num_seeds] = consts, generation.CompiledLoop(loop, make_mesh(1), consts, roots)
    consts, loop = compiled[num_seeds]
    carry = loop.init(consts, roots)
    return jax.device_get(loop.run(consts, carry, np.arange(config.num_generations))[1])

  metrics, states, _ = run(0, 3)
  for s in range(3):
    single_metrics, single_states, _ = run(s, 1)
    for a, b in zip(jax.tree.leaves(single_states), jax.tree.leaves(states)):
      a, b = (np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in (a[0], b[s]))
      norm = np.linalg.norm(b, axis=1)
      relative = np.linalg.norm(a - b, axis=1) / np.where(norm > 0, norm, 1)
      assert relative[0] <= 1e-6 and np.all(relative <= 1e-5), relative
    for k in metrics:
      np.testing.assert_allclose(single_metrics[k][0], metrics[k][s], rtol=1e-5, atol=1e-6)


def test_finished_run_is_not_recomputed(smoke_run, tmp_path):
  config = load_config("gaussian:accumulate")
  shutil.copytree(smoke_run("gaussian:accumulate")[0], tmp_path / "w")  # a finished run
  rows = read_metrics(tmp_path / "w")
  stamp = (tmp_path / "w" / "metrics.jsonl").stat().st_mtime_ns
  assert _run(config, tmp_path / "w") == rows
  assert json.loads((tmp_path / "w" / "config.json").read_text())["num_generations"] == 3
  assert (tmp_path / "w" / "metrics.jsonl").stat().st_mtime_ns >= stamp


def test_a_process_compiles_an_equal_configs_loop_once():
  """A loop is a value: the same config built again (a rerun, a resume in this process)
  gets the `CompiledLoop` the first built, with its traced programs; any change to the loop
  (a model setting, the pool's layout) or to the seeds' shapes gets its own."""
  mesh = make_mesh(1)

  def compiled(config):
    layout = validate.policy_of(config).layout(config.num_generations, multiple_of=1)
    loop = experiment.build_loop(config, layout)
    return generation.compiled_loop(loop, mesh, loop.source.consts(),
                                    rng.seed_keys(config.seed, config.num_seeds))
  first = compiled(load_config("kde_moons:accumulate"))
  assert compiled(load_config("kde_moons:accumulate")) is first
  others = [load_config("kde_moons:accumulate") for _ in range(3)]
  others[0].model.bandwidth *= 2
  others[1].num_generations += 1
  others[2].num_seeds += 1
  assert len({id(first), *(id(compiled(c)) for c in others)}) == 4
