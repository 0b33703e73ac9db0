"""Each policy's training view, generation by generation, is what the papers define
(Bertrand et al. 2024; Gerstgrasser et al. 2024)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax.data import image_files, images
from collapse_jax.loop import policies
from collapse_jax.loop.pool import DataPool, TrainView

N_REAL, N_SYNTH, GENS = 6, 6, 4


def _pool_after(policy, generations=GENS):
  """A pool whose rows record (generation, index) in their data, after ``generations``."""
  layout = policy.layout(generations, multiple_of=4)
  real = {"x": jnp.arange(N_REAL, dtype=jnp.float32)}
  pool = DataPool.create(real, layout)
  pools = [pool]
  for g in range(1, generations):
    fresh = {"x": 1000.0 * g + 500 + jnp.arange(policy.n_fresh)} if policy.n_fresh else None
    synth = {"x": 1000.0 * g + jnp.arange(policy.n_synth)} if policy.n_synth else None
    pool = pool.write_block(jnp.int32(g), fresh, synth)
    pools.append(pool)
  return pools


def _trained_on(policy, pool, g, key=0):
  counts = policy.counts(pool, jnp.int32(g), jax.random.PRNGKey(key))
  x = np.asarray(pool.data["x"])
  return sorted(np.repeat(x, np.asarray(counts)).tolist())


def _real():
  return list(range(N_REAL))


def _synth(g, n=N_SYNTH):
  return [1000.0 * g + i for i in range(n)]


def test_replace_trains_on_latest_synthetic_only():
  pol = policies.make_policy("replace", n_real=N_REAL, n_synth=N_SYNTH)
  pools = _pool_after(pol)
  assert _trained_on(pol, pools[0], 0) == _real()
  for g in range(1, GENS):
    assert _trained_on(pol, pools[g], g) == _synth(g)
  assert pol.layout(GENS).num_blocks == 1  # a ring of one block: old data is dropped


def test_accumulate_trains_on_real_plus_every_synthetic_block():
  pol = policies.make_policy("accumulate", n_real=N_REAL, n_synth=N_SYNTH)
  pools = _pool_after(pol)
  for g in range(GENS):
    expected = sorted(_real() + sum((_synth(t) for t in range(1, g + 1)), []))
    assert _trained_on(pol, pools[g], g) == expected
    assert len(expected) == N_REAL + g * N_SYNTH


def test_accumulate_subsample_is_a_subset_of_the_accumulated_pool_of_size_n():
  pol = policies.make_policy("accumulate_subsample", n_real=N_REAL, n_synth=N_SYNTH)
  pools = _pool_after(pol)
  assert _trained_on(pol, pools[0], 0) == _real()
  for g in range(1, GENS):
    accumulated = set(_real() + sum((_synth(t) for t in range(1, g + 1)), []))
    for key in range(5):
      picked = _trained_on(pol, pools[g], g, key)
      assert len(picked) == N_SYNTH and len(set(picked)) == N_SYNTH  # without replacement
      assert set(picked) <= accumulated
  # A fresh subsample each generation / key.
  assert _trained_on(pol, pools[3], 3, 0) != _trained_on(pol, pools[3], 3, 1)


@pytest.mark.parametrize("m,n", [(5, 8), (8, 8), (9, 8), (15, 8), (16, 8), (40, 8), (1000, 3)])
def test_uniform_subset_is_uniform_and_exact_size(m, n):
  draws = jax.vmap(lambda k: policies.uniform_subset(k, jnp.int32(m), n, 1024))(
      jax.random.split(jax.random.PRNGKey(0), 4000))
  draws = np.asarray(draws)
  assert set(np.unique(draws)) <= {0, 1}
  np.testing.assert_array_equal(draws.sum(1), min(m, n))
  assert draws[:, m:].sum() == 0
  # Each row is picked with probability n/m: a 6-sigma band of the binomial frequency.
  p = min(1.0, n / m)
  freq = draws[:, :m].mean(0)
  sigma = np.sqrt(p * (1 - p) / draws.shape[0]) + 1e-12
  assert np.all(np.abs(freq - p) <= 6 * sigma)


def test_mix_trains_on_the_real_set_plus_lambda_n_latest_samples():
  pol = policies.make_policy("mix", n_real=N_REAL, n_synth=999, mix_lambda=0.5)
  assert pol.n_synth == N_REAL // 2
  pools = _pool_after(pol)
  assert _trained_on(pol, pools[0], 0) == _real()
  for g in range(1, GENS):
    assert _trained_on(pol, pools[g], g) == sorted(_real() + _synth(g, N_REAL // 2))


def test_mix_lambda_zero_is_ordinary_training():
  pol = policies.make_policy("mix", n_real=N_REAL, n_synth=N_SYNTH, mix_lambda=0.0)
  assert pol.n_synth == 0
  pools = _pool_after(pol)
  for g in range(GENS):
    assert _trained_on(pol, pools[g], g) == _real()


@pytest.mark.parametrize("spec", [("fully_synthetic", 1.0), ("mix", float("inf"))])
def test_fully_synthetic_trains_on_latest_samples_only(spec):
  name, lam = spec
  pol = policies.make_policy(name, n_real=N_REAL, n_synth=3, mix_lambda=lam)
  assert pol.n_synth == N_REAL
  pools = _pool_after(pol)
  assert _trained_on(pol, pools[0], 0) == _real()
  for g in range(1, GENS):
    assert _trained_on(pol, pools[g], g) == _synth(g, N_REAL)


def test_fresh_real_adds_new_real_rows_each_generation():
  pol = policies.make_policy("fresh_real", n_real=N_REAL, n_synth=N_SYNTH)
  pools = _pool_after(pol)
  assert _trained_on(pol, pools[0], 0) == _real()
  for g in range(1, GENS):
    fresh = [1000.0 * g + 500 + i for i in range(N_REAL)]
    assert _trained_on(pol, pools[g], g) == sorted(fresh + _synth(g))
    view = TrainView(pool=pools[g], counts=pol.counts(pools[g], jnp.int32(g), None),
                     generation=jnp.int32(g))
    assert float(view.stats()["train_frac_synthetic"]) == pytest.approx(0.5)


def test_unknown_policy_is_one_clear_sentence():
  with pytest.raises(ValueError, match="Unknown policy 'bogus'; choose one of replace"):
    policies.make_policy("bogus", n_real=1, n_synth=1)


def test_pool_reduce_is_bitwise_independent_of_capacity():
  pol = policies.make_policy("accumulate", n_real=N_REAL, n_synth=N_SYNTH)
  rng = np.random.default_rng(0)
  small, large = (DataPool.create({"x": jnp.zeros(N_REAL)}, pol.layout(g)) for g in (3, 40))
  for g in (1, 2):
    block = {"x": jnp.asarray(rng.standard_normal(N_SYNTH), jnp.float32)}
    small, large = (p.write_block(jnp.int32(g), None, block) for p in (small, large))
  small, large = (p.replace(data={"x": p.data["x"].at[:N_REAL].set(jnp.arange(N_REAL) / 7)})
                  for p in (small, large))
  total = lambda p: TrainView(pool=p, counts=pol.counts(p, jnp.int32(2), None),
                              generation=jnp.int32(2)).reduce(
      lambda rows, c: jnp.sum(c * jnp.exp(rows["x"])))
  assert np.asarray(total(small)).tobytes() == np.asarray(total(large)).tobytes()
  np.testing.assert_array_equal(large.resized(pol.layout(40)).generation, large.generation)
  grown = small.resized(pol.layout(40))
  assert np.asarray(total(grown)).tobytes() == np.asarray(total(large)).tobytes()


def test_pixel_fields_are_held_as_uint8_and_decoded_bitwise_per_batch():
  levels = np.random.default_rng(0).integers(0, 256, (N_REAL, 4, 4, 1), dtype=np.uint8)
  loaded = image_files._to_unit_range(levels, 255.0)  # what the image loaders hand out
  layout = policies.make_policy("accumulate", n_real=N_REAL, n_synth=N_SYNTH).layout(GENS)
  pool = DataPool.create({"image": jnp.asarray(levels)}, layout, pixels=("image",))
  assert pool.data["image"].dtype == jnp.uint8 and pool.data["image"].nbytes == pool.data[
      "image"].size
  # Samples are rounded onto the 8-bit grid (clipped to [-1, 1]) when written.
  samples = loaded + 0.002  # N_SYNTH == N_REAL rows
  samples[0, 0, 0, 0], samples[1, 0, 0, 0] = 7.0, -7.0
  pool = pool.write_block(jnp.int32(1), None, {"image": jnp.asarray(samples, jnp.float32)})
  view = TrainView(pool=pool, counts=jnp.ones(layout.capacity, jnp.int32),
                   generation=jnp.int32(1))
  batch = view.gather(jnp.arange(2 * N_REAL))["image"]
  np.testing.assert_array_equal(batch[:N_REAL], loaded)  # real rows: bitwise the loader's
  want = np.asarray(image_files._to_unit_range(levels, 255.0))
  want[0, 0, 0, 0], want[1, 0, 0, 0] = 1.0, -1.0
  np.testing.assert_array_equal(batch[N_REAL:], want)
  # Reductions see the same float values.
  total = view.reduce(lambda rows, c: jnp.einsum("n,nhwc->", c, rows["image"]))
  np.testing.assert_allclose(total, loaded.sum() + want.sum(), rtol=1e-5)


def test_eight_bit_image_datasets_have_pixel_pools_and_digits_does_not():
  spec = lambda name: tuple({"name": name}.get(f) for f in images._SPEC_FIELDS)
  assert images.ImageSource(spec=spec("mnist"), n_test=10).pixels
  assert not images.ImageSource(spec=spec("digits"), n_test=10).pixels


@pytest.mark.parametrize("policy,examples", [("real_only", lambda g: 100),
                                             ("more_real", lambda g: 100 * (g + 1))])
def test_control_arms_train_on_real_rows_only(policy, examples, tmp_path):
  """real_only keeps the initial real set; more_real accumulates as many fresh real rows as
  accumulate gets synthetic ones. Neither ever trains on a sample."""
  from collapse_jax import experiment
  from conftest import load_config
  rows = experiment.train_and_evaluate(load_config(f"linreg:{policy}"), tmp_path)
  assert all(r["train_frac_synthetic"] == 0.0 for r in rows)
  assert [r["train_examples"] for r in rows] == [examples(r["generation"]) for r in rows]


def test_a_steps_budget_trains_every_pool_the_same_steps_and_epochs_scale_with_it():
  """model.steps: the same optimizer steps for a replace pool (100 rows) and an accumulated
  one (500); model.epochs: steps in proportion to the pool (the papers' protocol)."""
  import types
  import jax.numpy as jnp
  from collapse_jax.models import training
  view = lambda n: types.SimpleNamespace(size=lambda: jnp.int32(n))
  steps = training.Budget(batch_size=16, steps=125, epochs=0.0)
  epochs = training.Budget(batch_size=16, steps=0, epochs=3.0)
  assert [int(steps.num_steps(view(n))) for n in (100, 500)] == [125, 125]
  assert [int(epochs.num_steps(view(n))) for n in (100, 500)] == [19, 94]
