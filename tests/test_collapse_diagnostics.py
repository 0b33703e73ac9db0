"""The diagnostics evaluator (collapse_jax/evals/diagnostics.py) and the training rows it
sees: the rows each generation really trained on, drawn in the compiled loop (not a
rebuilt copy), and memorization that tells a copying model from one that generalises.
The metric math against hand computations is tests/test_diagnostics.py's."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from collapse_jax import experiment, rng, validate
from collapse_jax.loop.generation import CompiledLoop
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.parallel.mesh import make_mesh

from conftest import load_config


def _rows(batch) -> set:
  return {tuple(np.round(r, 6)) for r in np.asarray(batch)}


def test_each_generation_outputs_the_rows_it_trained_on():
  config = load_config("gaussian:replace")
  config.evals = {}
  layout = validate.policy_of(config).layout(config.num_generations)
  loop = experiment.build_loop(config, layout)
  loop = loop.__class__(**{**loop.__dict__, "train_rows": 1000})
  consts, roots = loop.source.consts(), rng.seed_keys(0, config.num_seeds)
  compiled = CompiledLoop(loop, make_mesh(1), consts, roots)
  carry = compiled.init(consts, roots)
  real = np.asarray(carry.pool.data["x"][:, :layout.n_real])
  carry, (_, _, first) = compiled.run(consts, carry, np.arange(1))
  # Generation 1 (replace) trains on generation 0's samples, which the next generation
  # overwrites in the pool's ring.
  block = np.asarray(carry.pool.data["x"][:, layout.block_start(1):][:, :layout.n_synth])
  _, (_, _, second) = compiled.run(consts, carry, np.arange(1, 2))
  training = jax.tree.map(lambda a, b: np.concatenate([a, b], 1), first, second)
  rows, valid = np.asarray(training["rows"]["x"]), np.asarray(training["valid"])
  for s in range(config.num_seeds):
    assert valid[s, 0].sum() == layout.n_real and valid[s, 1].sum() == layout.n_synth
    assert _rows(rows[s, 0][valid[s, 0]]) == _rows(real[s])
    assert _rows(rows[s, 1][valid[s, 1]]) == _rows(block[s])


def test_the_training_subset_is_uniform_and_does_not_depend_on_the_capacity():
  key = jax.random.PRNGKey(3)
  counts = jnp.array([1, 0, 1, 1, 0, 1, 1, 1] + [0] * 8, jnp.int32)
  layout = PoolLayout(n_real=16, n_fresh=0, n_synth=0, num_blocks=0)
  view = lambda c: TrainView(pool=DataPool.create({"x": jnp.zeros((16, 1))}, layout),
                             counts=c, generation=jnp.int32(0))
  rows, valid = view(counts).subset(key, 4)
  assert valid.all() and np.all(np.asarray(counts)[np.asarray(rows)] == 1)
  padded = TrainView(pool=view(counts).pool, counts=jnp.pad(counts, (0, 16))[:16],
                     generation=jnp.int32(0))
  np.testing.assert_array_equal(padded.subset(key, 4)[0], rows)
  everything, valid = view(counts).subset(key, 10)
  assert valid.sum() == 6 and set(np.asarray(everything)[np.asarray(valid)]) == {0, 2, 3, 5, 6, 7}
  # Uniform: over many keys every training row is picked about equally often.
  keys = jax.random.split(jax.random.PRNGKey(1), 3000)
  picks = np.asarray(jax.jit(jax.vmap(lambda k: view(counts).subset(k, 2)[0]))(keys)).ravel()
  freq = np.bincount(picks, minlength=16)[[0, 2, 3, 5, 6, 7]] / 6000
  np.testing.assert_allclose(freq, 1 / 6, atol=0.02)


def _kde_memorization(bandwidth, tmp_path):
  config = load_config("kde_moons:replace")
  config.num_generations = 1
  config.model.bandwidth = bandwidth
  config.evals = ml_collections.ConfigDict({"d": {
      "type": "diagnostics", "num_samples": 200, "training_rows": 100,
      "classifier_steps": 1, "ngram": 4}})
  (row, *_) = experiment.train_and_evaluate(config, tmp_path)
  return row


def test_memorization_tells_a_copying_model_from_one_that_generalises(tmp_path):
  """A KDE of bandwidth 1e-4 samples its training points back: nearly every sample is a
  near-copy; at Scott's bandwidth few are, and samples sit about as far from the training
  rows as held-out real rows do."""
  copying = _kde_memorization("0.0001", tmp_path / "copy")
  assert copying["memorized_share"] > 0.95 and copying["nn_distance_ratio"] < 0.01
  smooth = _kde_memorization("scott", tmp_path / "smooth")
  assert smooth["memorized_share"] < 0.3 and smooth["nn_distance_ratio"] > 0.5
  for row in (copying, smooth):
    assert np.isfinite(row["train_entropy"]) and 0 <= row["tail_recall"] <= 1
