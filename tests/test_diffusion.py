"""Diffusion family: EDM / DDPM maths against hand-written values, samplers against the exact
probability flow of Gaussian data, training on a toy and on 8x8 digits, the FFHQ config
end to end with resume."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from collapse_jax import experiment, validate
from collapse_jax.data.source import RowSpec
from collapse_jax.generative.processes import DDPM, EDM
from collapse_jax.models import diffusion

from conftest import load_config, read_metrics

TOY_SPEC = RowSpec(fields={"x": ((2,), "float32")}, data="x")


# --- The processes' formulas. -----------------------------------------------------------

def test_edm_preconditioning_matches_table_1():
  """EDM Table 1 with sigma_data = 0.5, written out by hand for sigma = 1 and 2:
  c_skip = 0.25 / (s^2 + 0.25), c_out = 0.5 s / sqrt(s^2 + 0.25), c_in = 1 / sqrt(s^2 + 0.25),
  c_noise = ln(s) / 4, lambda = (s^2 + 0.25) / (0.5 s)^2."""
  edm = EDM(precond="edm")
  got = edm.coefficients(jnp.array([1.0, 2.0]))
  want = ([0.2, 0.25 / 4.25], [0.5 / math.sqrt(1.25), 1 / math.sqrt(4.25)],
          [1 / math.sqrt(1.25), 1 / math.sqrt(4.25)], [0.0, math.log(2) / 4])
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(edm.weight(jnp.array([1.0, 2.0])), [5.0, 4.25], rtol=1e-6)


def test_vp_preconditioning_matches_table_1():
  """VP: c_skip = 1, c_out = -s, c_in = 1 / sqrt(s^2 + 1), c_noise = 999 t(s) with
  t(s) = (sqrt(0.1^2 + 2 * 19.9 * ln(1 + s^2)) - 0.1) / 19.9; lambda = 1 / s^2."""
  vp = EDM(precond="vp")
  c_skip, c_out, c_in, c_noise = vp.coefficients(jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(c_skip, [1.0, 1.0])
  np.testing.assert_allclose(c_out, [-1.0, -2.0])
  np.testing.assert_allclose(c_in, [1 / math.sqrt(2), 1 / math.sqrt(5)], rtol=1e-6)
  t = lambda s: (math.sqrt(0.01 + 2 * 19.9 * math.log(1 + s * s)) - 0.1) / 19.9
  np.testing.assert_allclose(c_noise, [999 * t(1.0), 999 * t(2.0)], rtol=1e-5)  # 258.70, 396.79
  np.testing.assert_allclose(vp.weight(jnp.array([2.0])), [0.25])
  ts = jnp.array([1e-5, 0.1, 0.5, 1.0])
  np.testing.assert_allclose(vp.vp_sigma_inv(vp.vp_sigma(ts)), ts, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(vp.vp_sigma(1.0), 152.16697, rtol=1e-5)


def test_noise_levels_and_discretisations():
  edm = EDM()
  # u = 0.5 is the log-normal median exp(P_mean); u = Phi(1) is exp(P_mean + P_std).
  np.testing.assert_allclose(edm.noise_level(jnp.array([0.5, 0.8413447])),
                             [math.exp(-1.2), 1.0], rtol=1e-5)
  sig = edm.sigma_steps(3)  # rho = 7: the middle level is the mean of sigma^(1/7), ^7
  middle = ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
  np.testing.assert_allclose(sig, [80.0, middle, 0.002, 0.0], rtol=1e-5)
  assert np.all(np.diff(edm.sigma_steps(18)) < 0)

  ddpm = DDPM()
  abar = ddpm.alphas_cumprod()
  np.testing.assert_allclose(abar[:2], [1 - 1e-4, (1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999))],
                             rtol=1e-6)
  np.testing.assert_array_equal(ddpm.noise_level(jnp.array([0.0, 0.5, 0.9999])), [0, 500, 999])
  ts = ddpm.timesteps(100)
  assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 100 and np.all(np.diff(ts) < 0)


@pytest.mark.parametrize("process,steps,tol", [
    (EDM(precond="edm"), 100, 2e-3),
    (EDM(precond="vp"), 100, 2e-3),
    (DDPM(), 1000, 3e-3),
])
def test_samplers_follow_the_gaussian_probability_flow(process, steps, tol):
  """With the exact denoiser of N(0, s^2) data the probability-flow ODE is linear and maps
  x_T to x_T * s / (std of x_T); both samplers converge to it (Heun's error ~ 1/N^2,
  DDIM's ~ 1/N)."""
  s = 0.7
  x_T = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  if isinstance(process, DDPM):
    abar = process.alphas_cumprod()

    def net(x, t, cond, key):  # E[eps | x_t]
      a = abar[t.astype(jnp.int32)][:, None]
      return jnp.sqrt(1 - a) / (a * s ** 2 + 1 - a) * x
    std_T = jnp.sqrt(abar[-1] * s ** 2 + 1 - abar[-1])
    expected = x_T * s / std_T
  else:
    def net(x_in, c_noise, cond, key):  # F such that D(x; sigma) = s^2 / (s^2 + sigma^2) x
      sigma = (jnp.exp(4 * c_noise) if process.precond == "edm"
               else process.vp_sigma(c_noise / (process.vp_m - 1)))[:, None]
      c_skip, c_out, c_in, _ = process.coefficients(sigma)
      x = x_in / c_in
      return (s ** 2 / (s ** 2 + sigma ** 2) * x - c_skip * x) / c_out
    sigma_max = process.sigma_steps(steps)[0]
    expected = x_T * sigma_max * s / np.sqrt(s ** 2 + sigma_max ** 2)
  process = dataclasses.replace(process, sampler_steps=steps)
  got = jax.jit(lambda x: process.sample(net, x, None, {}, None))(x_T)
  np.testing.assert_allclose(got, expected, rtol=tol)


# --- The model on a 2-D toy (MLP). ------------------------------------------------------

def _model_and_carry(config):
  layout = validate.policy_of(config).layout(config.num_generations)
  loop = experiment.build_loop(config, layout)
  consts = loop.source.consts()
  return loop, consts, jax.jit(loop.init)(consts, jax.random.PRNGKey(0))


@pytest.mark.parametrize("kind,factor", [("ddpm", 0.5), ("edm", 0.95)])
def test_toy_sampling_and_training(kind, factor):
  """Sampler shapes, determinism and temperature; then 60 steps of generation 0's longer
  budget (later generations would train 1 step) must lower the test loss. Its noise is
  fixed, so any decrease is the model's; EDM's weighting has a high floor on 8 gaussians
  (the posterior variance of x0 in units of c_out^2)."""
  config = load_config("toy_diffusion:accumulate", f"process={kind},smoke")
  config.train_from = "previous"
  config.model.update({"steps": 1, "initial_steps": 60, "learning_rate": 3e-3,
                       "batch_size": 64, "inference_batch_size": 16})
  config.model.mlp.width = 64
  assert diffusion.check_config(config, TOY_SPEC) is None
  loop, consts, carry = _model_and_carry(config)
  model, state, task = loop.model, carry.state, carry.task

  # 40 rows: three chunks of 16, the last one padded.
  sample = jax.jit(lambda m, s, t, k: m.sample(s, t, k, 40)["x"], static_argnums=0)
  a = sample(model, state, task, jax.random.PRNGKey(1))
  assert a.shape == (40, 2) and a.dtype == jnp.float32
  np.testing.assert_array_equal(a, sample(model, state, task, jax.random.PRNGKey(1)))
  assert not np.allclose(a, sample(model, state, task, jax.random.PRNGKey(2)))
  # A fresh network outputs 0 (zero-initialised head), so both samplers are linear in
  # their initial noise: temperature scales the samples.
  cold = sample(dataclasses.replace(model, temperature=0.5), state, task, jax.random.PRNGKey(1))
  np.testing.assert_allclose(cold, 0.5 * a, rtol=1e-5, atol=1e-6)

  before = jax.jit(model.evaluate)(state, task, jax.random.PRNGKey(0))
  assert set(before) == {"test_loss"} and before["test_loss"].shape == ()
  _, (metrics, _, _) = jax.jit(lambda c: loop.step(consts, c, jnp.int32(0)))(carry)
  assert np.isfinite(before["test_loss"])
  assert metrics["test_loss"] < factor * before["test_loss"], (before, metrics)


# --- The model on 8x8 digits (UNet). ----------------------------------------------------

def test_unet_loss_decreases_and_samples_are_images():
  """A handful of Adam steps on one batch of digits (the full loop's compile is the e2e test's)."""
  config = load_config("cifar10:mix,process=ddpm", "smoke")
  assert config.data.name == "digits"
  loop, consts, carry = _model_and_carry(config)
  model = loop.model
  batch, key = {"image": jnp.asarray(consts["train"][:16])}, jax.random.PRNGKey(0)
  opt = optax.adam(3e-3)

  @jax.jit
  def adam_step(params, opt_state):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean(model.loss(p, batch, key)))(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  params = carry.state["params"]
  opt_state = opt.init(params)
  losses = []
  for _ in range(9):
    params, opt_state, loss = adam_step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.9 * losses[0], losses

  sample = jax.jit(lambda p, t, k: model.sample({"ema": p}, t, k, 5)["image"])
  a = sample(params, carry.task, jax.random.PRNGKey(1))
  assert a.shape == (5, 8, 8, 1) and a.dtype == jnp.float32
  assert np.all(np.abs(a) <= 1) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, sample(params, carry.task, jax.random.PRNGKey(1)))
  assert not np.allclose(a, sample(params, carry.task, jax.random.PRNGKey(2)))


# --- Configs. ---------------------------------------------------------------------------

def test_config_variants():
  assert load_config("cifar10:mix,process=edm", "lambda=0.5,smoke").policy.mix_lambda == 0.5
  full = load_config("cifar10:mix,process=edm", "lambda=inf")
  assert math.isinf(full.policy.mix_lambda) and full.data.name == "cifar10"
  assert (full.model.kind, full.model.precond, full.model.sampler_steps) == ("edm", "vp", 18)
  assert load_config("cifar10:mix,process=ddpm", None).model.sampler_steps == 100
  assert load_config("toy_diffusion:replace", "process=edm").model.kind == "edm"
  with pytest.raises(ValueError, match="Unknown config variant"):
    load_config("cifar10:mix,process=edm", "smok")
  with pytest.raises(ValueError, match="only applies to policy mix"):
    load_config("toy_diffusion:accumulate", "lambda=0.5")
  ffhq = load_config("ffhq_accumulate", None)
  assert (ffhq.data.resolution, ffhq.model.sampler_steps, ffhq.policy.name) == (64, 40,
                                                                                 "accumulate")


@pytest.mark.parametrize("process,field,value,problem", [
    ("edm", "kind", "score", "Unknown diffusion kind"),
    ("edm", "network", "transformer", "Unknown network 'transformer'"),
    ("edm", "network", "unet",
     r"rank 3, but the data field 'x' has shape \(2,\); use model.network = 'mlp'"),
    ("ddpm", "beta_schedule", "cosine", "Unknown beta schedule"),
    ("edm", "eta", 2.0, "model.eta must be in"),
    ("edm", "precond", "ve", "Unknown EDM precond"),
    ("edm", "sampler_steps", 1, "at least 2"),
    ("edm", "steps", 0, "exactly one of model.steps or model.epochs"),
    ("edm", "initial_steps", 100, "needs train_from = 'previous'"),
])
def test_check_config_names_the_problem(process, field, value, problem):
  config = load_config("toy_diffusion:accumulate", f"process={process},smoke")
  assert diffusion.check_config(config, TOY_SPEC) is None
  config.model[field] = value
  with pytest.raises(validate.ConfigError, match=problem):
    validate.check(config)


def test_ffhq_smoke_end_to_end_and_resume(tmp_path, monkeypatch):
  """The FFHQ config on 48 tiny PNGs: 2 generations, then continued to 3."""
  folder = tmp_path / "ffhq" / "00000"
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(48):
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(folder / f"{i:05d}.png")
  monkeypatch.setenv("COLLAPSE_JAX_FFHQ", str(tmp_path / "ffhq"))
  config = load_config("ffhq_accumulate", "smoke")
  assert (config.data.name, config.data.resolution, config.model.kind) == ("image_folder", 8,
                                                                            "edm")
  assert config.num_generations == 2
  work = tmp_path / "run"
  first = experiment.train_and_evaluate(config, work)
  config.num_generations = 3
  rows = experiment.train_and_evaluate(config, work)
  assert rows[:2] == first and len(rows) == len(read_metrics(work)) == 3
  assert all(np.isfinite(r["test_loss"]) for r in rows)
  assert [r["train_examples"] for r in rows] == [32, 64, 96]  # accumulate: 32 more each time
  assert (work / "checkpoints" / "models" / "2").exists()
