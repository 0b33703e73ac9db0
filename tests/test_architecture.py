"""The architecture's extension points: a family, a source, an evaluator and a policy written
outside collapse_jax (tests/plugins/, a few lines each) run with every policy and family;
the training loop takes token-weighted losses and a configured optimizer."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from collapse_jax import experiment, presets, testing, validate
from collapse_jax.loop import policies
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.models import training

from conftest import load_config, read_metrics

RECENT = "plugins.recent_policy"  # the real set plus the two newest synthetic generations


def _plugin_config(policy: str) -> ml_collections.ConfigDict:
  c = presets.base(policy)
  c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 3, 32, 32
  c.policy.mix_lambda = 0.5
  c.model = ml_collections.ConfigDict({"name": "plugins.mean_family", "scale": 0.5})
  c.data = ml_collections.ConfigDict({"source": "plugins.ring_source"})
  c.evals = ml_collections.ConfigDict(
      {"norm": {"type": "plugins.norm_eval", "num_samples": 16}})
  return c


@pytest.mark.parametrize("policy", policies.NAMES + (RECENT,))
def test_outside_family_source_and_evaluator_run_every_policy(policy, tmp_path):
  rows = experiment.train_and_evaluate(_plugin_config(policy), tmp_path)
  assert rows == read_metrics(tmp_path)
  assert len(rows) == 3 * 2
  for r in rows:
    # The mean of points on a ring centred at 0 is ~0, so samples have norm ~ scale*sqrt(2)
    # plus the fitted mean: the evaluator saw this family's samples, not another's.
    assert 0.3 < r["sample_norm"] < 1.5, r
    assert r["test_loss"] > 4  # E|p - mean|^2 ~ 9 for a ring of radius 3
  if policy == "replace":
    assert rows[-1]["train_frac_synthetic"] == 1.0


def test_outside_policy_is_accumulate_until_its_window_slides(tmp_path):
  """Linear regression, 4 seeds, generations 0..3: the window of two synthetic generations
  holds everything accumulate holds up to generation 2, then drops generation 1."""
  runs = {}
  for policy in ("accumulate", RECENT):
    config = load_config(f"linreg:{policy}" if "." not in policy else "linreg")
    config.policy.name, config.num_generations = policy, 4
    runs[policy] = experiment.train_and_evaluate(config, tmp_path / policy.replace(".", "_"))
  # (accumulate's rows also carry its closed-form theory_* columns)
  acc = [{k: v for k, v in r.items() if not k.startswith("theory_")} for r in runs["accumulate"]]
  recent = runs[RECENT]
  seeds = len(acc) // 4
  assert recent[:3 * seeds] == acc[:3 * seeds]
  last = lambda rows: [r["test_error"] for r in rows[3 * seeds:]]
  assert last(recent) != last(acc)
  assert all(r["train_examples"] == 300 for r in recent[3 * seeds:])  # 100 real + 2 x 100


# Analytic families, the generative core (shared by diffusion, flow matching and GeoDiff),
# and token rows.
@pytest.mark.parametrize("name", ["gaussian:accumulate", "kde_moons:accumulate",
                                  "toy_diffusion:accumulate", "tinystories:accumulate"])
def test_outside_policy_runs_with_the_package_families(name, tmp_path):
  config = load_config(name)
  config.policy.name = RECENT
  rows = experiment.train_and_evaluate(config, tmp_path)
  assert len(rows) == config.num_generations * config.num_seeds
  assert all(np.isfinite(v) for r in rows for v in r.values())


def test_check_family_passes_good_families_and_names_the_rule_a_bad_one_breaks():
  testing.check_family(_plugin_config("accumulate"))
  bad = _plugin_config("accumulate")
  bad.model.name = "plugins.capacity_family"
  with pytest.raises(AssertionError, match="Rule 2 broken"):
    testing.check_family(bad)


def test_outside_plugin_errors_are_one_sentence():
  c = _plugin_config("replace")
  c.model.scale = -1.0
  with pytest.raises(validate.ConfigError, match="model.scale must be positive"):
    validate.check(c)
  c = _plugin_config("replace")
  c.evals.norm.type = "plugins.nowhere"
  with pytest.raises(validate.ConfigError, match="Cannot import the evaluator type module"):
    validate.check(c)
  c = _plugin_config("my_lab.nowhere")
  with pytest.raises(validate.ConfigError, match="Cannot import the policy module 'my_lab"):
    validate.check(c)
  c = _plugin_config("replace")
  c.evals.norm.type = "bogus"
  with pytest.raises(validate.ConfigError, match="Unknown evaluator type 'bogus'"):
    validate.check(c)


def test_family_checks_the_row_spec_not_the_source_name():
  c = _plugin_config("replace")
  c.model = ml_collections.ConfigDict({"name": "vae", "likelihood": "gaussian"})
  with pytest.raises(validate.ConfigError, match="vae model needs rows of one image"):
    validate.check(c)
  c.model = ml_collections.ConfigDict({"name": "kde", "bandwidth": "scott"})
  validate.check(c)  # KDE takes any vector rows, e.g. the ring's "p"


def _view(values: np.ndarray) -> TrainView:
  n = len(values)
  pool = DataPool.create({"x": jnp.asarray(values)},
                         PoolLayout(n_real=n, n_fresh=0, n_synth=0, num_blocks=0))
  return TrainView(pool=pool, counts=jnp.ones(n, jnp.int32), generation=jnp.int32(0))


def test_sum_weight_loss_is_minimised_as_sum_over_weight():
  """A (sum, weight) loss trains exactly like the mean it stands for, and a padded token
  (weight 0) changes nothing; both equal a hand-written Adam step on the token mean."""
  values = np.array([[1.0, 2.0, 0.0], [3.0, 5.0, 7.0]], np.float32)  # two "sequences"
  mask = np.array([[1, 1, 0], [1, 1, 1]], np.float32)                 # 5 real tokens
  budget = training.Budget(batch_size=2, steps=1, learning_rate=0.1)
  state = training.init_state({"w": jnp.zeros(())}, budget)

  def token_loss(params, batch, key):
    sq = (batch["x"] - params["w"]) ** 2
    m = jnp.asarray(mask)[: batch["x"].shape[0]]
    return jnp.sum(sq * m), jnp.sum(m)

  assert training.mean_loss(token_loss({"w": 0.0}, {"x": values}, None)) == pytest.approx(
      (1 + 4 + 9 + 25 + 49) / 5)
  # The batch is drawn from the view; make it the whole set in order by a fixed draw.
  view = _view(values)
  view = view.replace(counts=jnp.array([1, 1], jnp.int32))
  out = training.train(state, view, jax.random.PRNGKey(0), token_loss, budget)
  # By hand: the batch drawn, d/dw of the token mean at w=0, one clipped Adam step.
  batch_rows = np.asarray(view.draw(jax.random.split(jax.random.fold_in(
      jax.random.PRNGKey(0), 0))[0], 2))
  x, m = values[batch_rows], mask[batch_rows]
  grad = -2 * np.sum(x * m) / np.sum(m)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
  upd, _ = opt.update({"w": jnp.float32(grad)}, opt.init({"w": jnp.zeros(())}))
  np.testing.assert_allclose(out["params"]["w"], upd["w"], rtol=1e-6)


def test_warmup_cosine_schedule_and_adamw():
  b = training.Budget(batch_size=1, steps=10, learning_rate=1.0, schedule="cosine",
                      warmup_steps=2, optimizer_name="adamw", weight_decay=0.1)
  lr = [float(b.learning_rate_at(jnp.int32(s), jnp.int32(10))) for s in range(10)]
  np.testing.assert_allclose(lr[:2], [0.5, 1.0], rtol=1e-6)       # linear warm-up
  np.testing.assert_allclose(lr[2], 1.0, rtol=1e-6)                # cosine starts at the peak
  assert all(a > c for a, c in zip(lr[2:], lr[3:])) and lr[-1] < 0.05
  # AdamW decays weights that have zero gradient; Adam does not.
  params = {"w": jnp.ones(())}
  zero = {"w": jnp.zeros(())}
  upd, _ = b.optimizer().update(zero, b.optimizer().init(params), params)
  assert float(upd["w"]) == pytest.approx(-0.1)
  adam = training.Budget(batch_size=1, steps=1).optimizer()
  assert adam.update(zero, adam.init(params), params)[0]["w"] == 0


@pytest.mark.parametrize("field,value,message", [
    ("optimizer", "sgd", "Unknown optimizer 'sgd'"),
    ("lr_schedule", "linear", "Unknown learning-rate schedule 'linear'"),
    ("warmup_steps", -1, "must be >= 0"),
])
def test_bad_optimizer_settings_are_refused(field, value, message):
  model = ml_collections.ConfigDict(presets.training(batch_size=8, steps=10, **{field: value}))
  assert message in training.check_budget(model)


@pytest.mark.parametrize("name", ["toy_diffusion:replace"])
def test_bfloat16_mixed_precision_is_finite_and_close(name, tmp_path):
  """bfloat16 compute with float32 master weights: finite, and near the float32 result."""
  from conftest import load_config
  rows = {}
  for dtype in ("float32", "bfloat16"):
    config = load_config(name)
    config.model.dtype = dtype
    config.evals = ml_collections.ConfigDict()
    rows[dtype] = experiment.train_and_evaluate(config, tmp_path / dtype)
  for a, b in zip(rows["float32"], rows["bfloat16"]):
    assert np.isfinite(b["test_loss"])
    np.testing.assert_allclose(b["test_loss"], a["test_loss"], rtol=0.05)
  assert rows["float32"] != rows["bfloat16"]  # the bfloat16 path did run
