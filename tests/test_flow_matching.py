"""Flow matching: OT coupling, ODE solvers, exact likelihood, and a tiny training run."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import validate
from collapse_jax.data import toy2d
from collapse_jax.data.source import Task
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.data.source import RowSpec
from collapse_jax.generative.processes import ot_pairs, sinkhorn_log_plan
from collapse_jax.generative.family import Solver
from collapse_jax.models import flow_matching as fm

from conftest import load_config


TOY_SPEC = RowSpec(fields={"x": ((2,), "float32")}, data="x")


def _toy_model(mlp=None, **overrides):
  config = load_config("toy_flow:accumulate", "smoke")
  config.model.update(overrides)
  config.model.mlp.update(mlp or {})
  return fm.build(config, None, TOY_SPEC)


def _toy_task(n=64) -> Task:
  return Task(test={"x": toy2d.moons(jax.random.PRNGKey(1), n)}, aux={})


def _view(x: jax.Array, generation: int = 0) -> TrainView:
  layout = PoolLayout(n_real=x.shape[0], n_fresh=0, n_synth=0, num_blocks=0)
  pool = DataPool.create({"x": x}, layout)
  return TrainView(pool=pool, counts=jnp.ones(x.shape[0], jnp.int32),
                   generation=jnp.int32(generation), whole_blocks=True)


# ----------------------------------------------------------------------------------------
# Minibatch OT.


def test_sinkhorn_recovers_the_sorted_matching_on_a_line():
  # On a line the optimal assignment for a convex cost matches sorted orders.
  x0 = jnp.array([3.0, -1.0, 0.5, 2.0, -2.5, 1.0])[:, None]
  x1 = jnp.array([10.0, 4.0, 7.0, 5.5, 9.0, 6.0])[:, None]
  cost = (x0 - x1.T) ** 2
  log_plan = jax.jit(sinkhorn_log_plan, static_argnums=2)(cost, 1e-3 * jnp.mean(cost), 200)
  plan = np.exp(np.asarray(log_plan))
  np.testing.assert_allclose(plan.sum(0), 1 / 6, atol=1e-4)
  np.testing.assert_allclose(plan.sum(1), 1 / 6, atol=1e-3)
  expected = np.zeros((6, 6))
  expected[np.argsort(x0[:, 0]), np.argsort(x1[:, 0])] = 1 / 6
  np.testing.assert_allclose(plan, expected, atol=1e-3)

  i, j = jax.jit(ot_pairs, static_argnums=(3, 4))(jax.random.PRNGKey(0), x0, x1, 1e-3, 200)
  assert i.shape == j.shape == (6,)
  np.testing.assert_array_equal(expected[np.asarray(i), np.asarray(j)], 1 / 6)


def test_ot_pairs_transport_less_than_an_independent_coupling():
  x0 = jax.random.normal(jax.random.PRNGKey(0), (128, 2))
  x1 = toy2d.moons(jax.random.PRNGKey(1), 128)
  i, j = jax.jit(ot_pairs, static_argnums=(3, 4))(jax.random.PRNGKey(2), x0, x1, 3e-3, 100)
  ot = jnp.mean(jnp.sum((x0[i] - x1[j]) ** 2, -1))
  independent = jnp.mean(jnp.sum((x0 - x1) ** 2, -1))
  assert ot < 0.35 * independent


# ----------------------------------------------------------------------------------------
# ODE solvers and the exact likelihood, against an affine flow with closed forms.

M = jnp.array([1.0, -2.0])
S = jnp.array([0.5, 2.0])


def gaussian_flow(x, t):
  """Velocity carrying N(0, I) to N(M, diag S^2) along x_t = (1 - t + t S) x0 + t M."""
  return (S - 1) * (x - t * M) / (1 - t + t * S) + M


@pytest.mark.parametrize("solver", [Solver(name="dopri5"), Solver(name="heun", steps=64),
                                    Solver(name="euler", steps=400)])
def test_solvers_transport_noise_to_the_target_gaussian(solver):
  x0 = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
  x1 = jax.jit(lambda x: solver.integrate(lambda t, y: gaussian_flow(y, t), x, 0.0, 1.0))(x0)
  tol = 2e-2 if solver.name == "euler" else 1e-4
  np.testing.assert_allclose(x1, M + S * x0, atol=tol)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_exact_nll_matches_the_closed_form_of_an_affine_flow(temperature):
  x = jax.random.normal(jax.random.PRNGKey(3), (7, 2)) * 2
  solver = Solver(name="dopri5", rtol=1e-6, atol=1e-6)
  field = lambda t, y, cond: gaussian_flow(y, t)
  log_p = jax.jit(lambda x: solver.log_likelihood(field, x, None, {}, 1.0, 0.0, temperature))(x)
  scale = temperature * S
  expected = jnp.sum(-0.5 * ((x - M) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi),
                     -1)
  np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------
# The model family.


def test_shapes_dtypes_and_metrics():
  model, task = _toy_model(solver="heun", ode_steps=4), _toy_task()
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  batch = {"x": task.test["x"][:16]}
  for m in (model, dataclasses.replace(
      model, process=dataclasses.replace(model.process, ot_coupling=False))):
    loss = jax.jit(m.loss)(state["params"], batch, jax.random.PRNGKey(1))
    assert loss.shape == (16,) and loss.dtype == jnp.float32
  x = jax.jit(model.sample, static_argnums=3)(state, task, jax.random.PRNGKey(2), 10)["x"]
  assert x.shape == (10, 2) and x.dtype == jnp.float32
  metrics = jax.jit(model.evaluate)(state, task, jax.random.PRNGKey(3))
  assert set(metrics) == {"test_loss", "test_nll"}
  assert all(m.shape == () and np.isfinite(m) for m in metrics.values())
  # The untrained net predicts v = 0: samples are the noise (one chunk: the first of a
  # one-way split), test_nll that of N(0, I).
  noise = jax.random.normal(jax.random.split(jax.random.PRNGKey(2), 1)[0], (10, 2))
  np.testing.assert_allclose(x, noise, atol=1e-6)
  x1 = task.test["x"]
  expected = jnp.mean(0.5 * jnp.sum(x1 ** 2, -1) + jnp.log(2 * jnp.pi))
  np.testing.assert_allclose(metrics["test_nll"], expected, rtol=1e-5)


def test_unet_network_samples_images_in_range():
  config = load_config("cifar10:mix,process=otcfm", "smoke")
  config.model.update({"solver": "euler", "ode_steps": 2})
  model = fm.build(config, None, RowSpec(fields={"image": ((8, 8, 1), "float32")}, data="image"))
  task = Task(test={"image": jnp.zeros((4, 8, 8, 1))}, aux={})
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  out = jax.jit(model.sample, static_argnums=3)(state, task, jax.random.PRNGKey(1), 3)["image"]
  assert out.shape == (3, 8, 8, 1) and out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out))) <= 1.0


@pytest.mark.parametrize("solver", ["euler", "dopri5"])
def test_sampler_is_deterministic_for_a_key_and_chunks_cover_n(solver):
  model, task = _toy_model(solver=solver, ode_steps=4, inference_batch_size=4), _toy_task()
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  # A nonzero field, so the ODE actually moves the points.
  state["ema"] = jax.tree.map(lambda p: p + 0.1, state["ema"])
  sample = jax.jit(model.sample, static_argnums=3)
  a = sample(state, task, jax.random.PRNGKey(5), 10)["x"]
  b = sample(state, task, jax.random.PRNGKey(5), 10)["x"]
  c = sample(state, task, jax.random.PRNGKey(6), 10)["x"]
  np.testing.assert_array_equal(a, b)
  assert a.shape == (10, 2) and not np.allclose(a, c)
  assert len(np.unique(np.asarray(a)[:, 0])) == 10  # every chunk draws its own noise


def test_loss_decreases_on_a_tiny_2d_run():
  model = _toy_model(mlp={"depth": 2, "width": 64}, ot_coupling=True, steps=300, batch_size=64,
                     learning_rate=3e-3, ema_decay=0.9, solver="euler", ode_steps=8)
  task = _toy_task(256)
  view = _view(toy2d.moons(jax.random.PRNGKey(7), 512))
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  evaluate = jax.jit(model.evaluate)
  before = evaluate(state, task, jax.random.PRNGKey(0))
  state = jax.jit(model.fit)(state, view, task, jax.random.PRNGKey(1))
  after = evaluate(state, task, jax.random.PRNGKey(0))
  assert int(state["step"]) == 300
  assert after["test_loss"] < 0.7 * before["test_loss"]
  assert after["test_nll"] < before["test_nll"] - 0.3


def test_generation_zero_trains_for_initial_steps():
  model, task = _toy_model(steps=2, initial_steps=5), _toy_task()
  state = jax.jit(model.init)(jax.random.PRNGKey(0), task)
  fit = jax.jit(model.fit)
  for generation, step in [(0, 5), (1, 7), (2, 9)]:
    state = fit(state, _view(task.test["x"], generation), task, jax.random.PRNGKey(generation))
    assert int(state["step"]) == step


def test_check_config_names_the_problem():
  config = load_config("toy_flow:accumulate", "smoke")
  config.model.network = "unet"
  with pytest.raises(validate.ConfigError, match="network = 'mlp'"):
    validate.check(config)
  config = load_config("toy_flow:accumulate", "smoke")
  config.model.solver = "rk4"
  with pytest.raises(validate.ConfigError, match="Unknown ODE solver"):
    validate.check(config)
  config = load_config("cifar10:mix,process=otcfm", "smoke")
  config.model.exact_nll = True
  with pytest.raises(validate.ConfigError, match="2-D toys"):
    validate.check(config)
  config = load_config("toy_flow:accumulate", "smoke")
  config.model.initial_steps = 10
  with pytest.raises(validate.ConfigError, match="train_from = 'previous'"):
    validate.check(config)


def test_cifar_config_variants():
  for arg, lam in [("lambda=0", 0.0), ("lambda=0.5", 0.5), ("lambda=inf,smoke", float("inf")),
                   (None, 1.0)]:
    config = load_config("cifar10:mix,process=otcfm", arg)
    assert config.policy.mix_lambda == lam
    assert (config.data.name == "digits") == ("smoke" in (arg or ""))
  config = load_config("cifar10:mix,process=otcfm", None)
  assert config.train_from == "previous" and config.model.unet.base_channels == 128
  with pytest.raises(ValueError, match="Unknown config variant"):
    load_config("cifar10:mix,process=otcfm", "fast")
