"""VAE family: training lowers the test loss, samples are deterministic for a key, and the
decode knob samples the decoder mean or the model's full distribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import rng, validate
from collapse_jax.experiment import build_loop
from collapse_jax.loop.pool import DataPool, TrainView

from conftest import load_config


def _vae(likelihood, decode, steps=3):
  config = load_config("digits_vae", "replace,smoke")
  config.model.update({"likelihood": likelihood, "decode": decode, "steps": steps})
  validate.check(config)
  loop = build_loop(config, validate.policy_of(config).layout(config.num_generations))
  consts, root = loop.source.consts(), rng.seed_keys(0, 1)[0]
  task = loop.source.task(consts, rng.stream_key(root, "task"))
  real = loop.source.real(consts, task, rng.stream_key(root, "real", 0), 0,
                          loop.layout.n_real)
  pool = DataPool.create(real, loop.layout)
  view = TrainView(pool=pool, counts=(pool.generation == 0).astype(jnp.int32),
                   generation=jnp.int32(0), whole_blocks=True)
  return loop.model, task, view


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_training_lowers_the_test_loss(likelihood):
  model, task, view = _vae(likelihood, "mean", steps=60)
  key = jax.random.PRNGKey(0)
  # Compiled whole (op by op, init and evaluate compile a few hundred small programs).
  state = jax.jit(model.init)(key, task)
  evaluate = jax.jit(model.evaluate)
  before = evaluate(state, task, key)["test_loss"]
  after = evaluate(jax.jit(model.fit)(state, view, task, key), task, key)["test_loss"]
  assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decode_mean_and_sample(likelihood):
  model, task, _ = _vae(likelihood, "sample")
  # Compiled whole, as the loop runs them (op by op would compile each operation).
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  sample = lambda model, key: jax.jit(model.sample, static_argnums=3)(state, task, key, 64)
  key = jax.random.PRNGKey(1)
  drawn = sample(model, key)["image"]
  np.testing.assert_array_equal(drawn, sample(model, key)["image"])
  assert drawn.shape == (64,) + task.test["image"].shape[1:]
  assert float(jnp.min(drawn)) >= -1 and float(jnp.max(drawn)) <= 1
  mean_model, _, _ = _vae(likelihood, "mean")
  mean = sample(mean_model, key)["image"]
  if likelihood == "bernoulli":  # pixels drawn from p(x | z) are black or white
    assert set(np.unique(np.asarray(drawn))) <= {-1.0, 1.0}
    assert len(np.unique(np.asarray(mean))) > 2
  else:  # decoder mean plus learned noise (sigma = 1 at init)
    assert float(jnp.std(drawn - mean)) > 0.3
