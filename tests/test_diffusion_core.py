"""The diffusion core (collapse_jax/generative/): masked rows with aux fields through every
process and a plugged-in network, exact likelihoods against closed forms, the sigmoid betas."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax.data.source import RowSpec, Task
from collapse_jax.generative.family import Family, Solver
from collapse_jax.generative.processes import DDPM, EDM, FlowMatching
from collapse_jax.generative.rows import Rows
from collapse_jax.models import training

BUDGET = training.Budget(batch_size=4, steps=1)


class SetNet:
  """A molecule-like network: per-entry weights, a masked mean over entries (so entries
  interact) and an embedding of the aux field ``atom``; ignores padding only via the mask."""

  def init(self, key, x, cond):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (3, 3)), "e": 0.3 * jax.random.normal(k2, (4, 3))}

  def apply(self, params, x, t, cond, key):
    m = cond["mask"][..., None]
    mean = jnp.sum(jnp.where(m > 0, x, 0), 1, keepdims=True) / jnp.maximum(jnp.sum(m, 1), 1)[
        :, None]
    h = x @ params["w"] + 0.5 * mean + params["e"][cond["atom"] % 4]
    return jnp.tanh(h + 0.1 * jnp.sin(t)[:, None, None])


def _molecules(width: int, garbage: float) -> dict:
  """Rows of 5, 3, 4, 5, 2 valid atoms padded to ``width`` with ``garbage`` values."""
  valid = np.array([5, 3, 4, 5, 2])
  mask = (np.arange(width)[None] < valid[:, None]).astype(np.float32)
  pos = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 5, 3)))
  atom = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (5, 5), 0, 4))
  pad = lambda a: np.pad(a, [(0, 0), (0, width - 5)] + [(0, 0)] * (a.ndim - 2))
  full_pos = np.where(mask[..., None] > 0, pad(pos), garbage).astype(np.float32)
  full_atom = np.where(mask > 0, pad(atom), 7).astype(np.int32)
  return {"pos": jnp.asarray(full_pos), "atom": jnp.asarray(full_atom), "mask": jnp.asarray(mask)}


PROCESSES = {  # DDPM as GeoDiff's: sigmoid betas, ancestral sampling
    "ddpm": DDPM(sampler_steps=4, beta_schedule="sigmoid", beta_start=1e-7, beta_end=9e-3,
                 eta=1.0),
    "edm": EDM(sampler_steps=3),
    "flow": FlowMatching(group=4, eval_times=2, sinkhorn_iters=20,
                         solver=Solver(name="euler", steps=3)),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_padding_changes_nothing(name):
  """Same loss, test loss, log-likelihood and samples on the valid entries whatever values
  padding holds and however much padding a row has; aux fields copied into samples."""
  outs = []
  for width, garbage in [(7, 1e3), (12, np.nan)]:
    spec = RowSpec(fields={"pos": ((width, 3), "float32"), "atom": ((width,), "int32"),
                           "mask": ((width,), "float32")}, data="pos", mask="mask")
    model = Family(process=PROCESSES[name], network=SetNet(), rows=Rows.of(spec), budget=BUDGET,
                   inference_batch_size=4, solver=Solver(name="euler", steps=2))
    task = Task(test=_molecules(width, garbage), aux={})
    params = model.network.init(jax.random.PRNGKey(2), None, None)
    state = {"params": params, "ema": params}

    @jax.jit
    def run(state, task):
      key = jax.random.PRNGKey(3)
      return (model.loss(state["params"], task.test, key),
              model.evaluate(state, task, key)["test_loss"],
              # the likelihood's masking is the process's field's: one process is enough
              model.log_likelihood(state, task, task.test) if name == "ddpm" else jnp.zeros(5),
              model.sample(state, task, key, 6))
    outs.append(run(state, task))
    loss, test_loss, log_p, sample = outs[-1]
    assert np.all(np.isfinite(loss)) and np.isfinite(test_loss) and np.all(np.isfinite(log_p))
    np.testing.assert_array_equal(sample["atom"], task.test["atom"][np.arange(6) % 5])
    np.testing.assert_array_equal(sample["mask"], task.test["mask"][np.arange(6) % 5])
    assert np.all(sample["pos"][sample["mask"] == 0] == 0)  # padding samples as 0
  (loss, test_loss, log_p, sample), rest = outs[0], outs[1:]
  for loss_w, test_loss_w, log_p_w, sample_w in rest:
    np.testing.assert_allclose(loss_w, loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(test_loss_w, test_loss, rtol=1e-5)
    np.testing.assert_allclose(log_p_w, log_p, rtol=1e-5, atol=1e-5)
    # Sums over longer padding round differently, and EDM's sampler starts at sigma = 80.
    np.testing.assert_allclose(sample_w["pos"][:, :7], sample["pos"], rtol=1e-4, atol=1e-5)


class GaussianOptimum:
  """The exact network of N(0, s^2 I) data for ``process``: epsilon (DDPM) or F (EDM)."""

  def __init__(self, process, s):
    self.process, self.s = process, s

  def init(self, key, x, cond):
    return {}

  def apply(self, params, x, t, cond, key):
    s, p = self.s, self.process
    if isinstance(p, DDPM):  # t is continuous: the process's interpolated schedule
      log_sigma = jnp.interp(t, jnp.arange(p.num_timesteps, dtype=jnp.float32),
                             jnp.asarray(p.log_sigmas(), jnp.float32))
      a = (1 / (1 + jnp.exp(2 * log_sigma)))[:, None]
      return jnp.sqrt(1 - a) / (a * s ** 2 + 1 - a) * x
    sigma = jnp.exp(4 * t)[:, None]  # EDM preconditioning: c_noise = log(sigma) / 4
    c_skip, c_out, c_in, _ = p.coefficients(sigma)
    y = x / c_in
    return (s ** 2 / (s ** 2 + sigma ** 2) * y - c_skip * y) / c_out


@pytest.mark.parametrize("process", [DDPM(), EDM(precond="edm")], ids=["ddpm", "edm"])
def test_log_likelihood_of_the_optimal_network_is_the_gaussian_density(process):
  s = 0.7
  model = Family(process=process, network=GaussianOptimum(process, s), rows=Rows(data="x"),
                 budget=BUDGET, inference_batch_size=3, solver=Solver(name="heun", steps=400))
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 2)) * s * 1.5
  log_p = jax.jit(lambda x: model.log_likelihood({"ema": {}}, None, {"x": x}))(x)
  expected = jnp.sum(-0.5 * (x / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi), -1)
  assert log_p.shape == (7,)
  np.testing.assert_allclose(log_p, expected, atol=1e-2)


def test_sigmoid_betas_are_geodiffs():
  """betas = sigmoid(linspace(-6, 6, T)) * (9e-3 - 1e-7) + 1e-7, written out."""
  betas = DDPM(beta_schedule="sigmoid", beta_start=1e-7, beta_end=9e-3).betas()
  ramp = lambda z: 1e-7 + (9e-3 - 1e-7) / (1 + math.exp(-z))
  np.testing.assert_allclose(betas[[0, 999]], [ramp(-6.0), ramp(6.0)], rtol=1e-12)
  np.testing.assert_allclose(betas[500], ramp(-6 + 12 * 500 / 999), rtol=1e-12)
  assert betas.shape == (1000,) and np.all(np.diff(betas) > 0)
