"""The transformer and its sampler: preset sizes, causality, KV cache, sampling rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse_jax.data import tokenizer as tok
from collapse_jax.models import training
from collapse_jax.models import transformer_lm
from collapse_jax.models.transformer_lm import TransformerLM, sample_token
from collapse_jax.nets import transformer as tfm


@pytest.mark.parametrize("name,count", [("gpt2-9m", 8_890_880), ("llama2-12m", 12_488_960),
                                        ("llama2-42m", 41_755_136),
                                        ("llama2-126m", 125_553_408)])
def test_presets_have_the_papers_parameter_counts(name, count):
  assert tfm.param_count(tfm.TransformerConfig.preset(name, 8000)) == count


def _tiny(arch, vocab=11):
  return tfm.TransformerConfig(vocab_size=vocab, d_model=16, num_layers=2, num_heads=2, d_ff=32,
                               max_len=16, **tfm.ARCHITECTURES[arch])


def _params(config, key=0):
  return jax.jit(tfm.Transformer(config).init)(jax.random.PRNGKey(key),
                                              jnp.zeros((1, 4), jnp.int32))


@pytest.mark.parametrize("arch", ["gpt2", "llama2"])
def test_no_position_attends_to_a_later_one(arch):
  config = _tiny(arch)
  apply, params = jax.jit(tfm.Transformer(config).apply), _params(config)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 10), 0, config.vocab_size)
  changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % config.vocab_size)
  a, _ = apply(params, tokens)
  b, _ = apply(params, changed)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert not np.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("arch", ["gpt2", "llama2"])
def test_kv_cached_decoding_gives_the_full_forward_logits(arch):
  config = _tiny(arch)
  apply, params = jax.jit(tfm.Transformer(config).apply), _params(config)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 9), 0, config.vocab_size)
  full, _ = apply(params, tokens)
  cache = tfm.init_cache(config, 3, config.max_len)
  prefill, cache = apply(params, tokens[:, :4], 0, cache)
  steps = [prefill]
  for t in range(4, 9):
    logits, cache = apply(params, tokens[:, t:t + 1], t, cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)


def _lm(config, temperature, context=12, prompt="bos"):
  budget = training.Budget(batch_size=4, steps=1)
  return TransformerLM(net_config=config, field="tokens", context=context, budget=budget,
                       temperature=temperature, prompt=prompt, sample_batch_size=4)


def test_temperature_zero_is_greedy_decoding(monkeypatch):
  logits = jax.random.normal(jax.random.PRNGKey(3), (5, 7))
  np.testing.assert_array_equal(sample_token(logits, jax.random.PRNGKey(4), 0.0),
                                jnp.argmax(logits, -1))
  # The whole sampler at temperature 0 against argmax decoding by full forward passes,
  # with the KV cache grown in blocks of 5 (phases end at 5 and 10, then the context 12).
  monkeypatch.setattr(transformer_lm, "CACHE_BLOCK", 5)
  config = _tiny("gpt2", vocab=40)
  lm, params = _lm(config, 0.0), _params(config)["params"]
  rows = np.asarray(jax.jit(lm.generate, static_argnums=3)(params, None,
                                                          jax.random.PRNGKey(5), 2))
  # Causal, so the logits at t of a row filled up to t are those of its prefix.
  apply = jax.jit(lambda seq: lm.net.apply({"params": params}, seq)[0])
  seq = jnp.full((2, lm.context), tok.BOS, jnp.int32)
  for t in range(1, lm.context):
    logits = apply(seq)[:, t - 1].at[:, jnp.array([tok.PAD, tok.BOS])].set(-jnp.inf)
    seq = seq.at[:, t].set(jnp.argmax(logits, -1))
  for row, want in zip(rows, np.asarray(seq)):
    end = list(want).index(tok.EOS) + 1 if tok.EOS in want else len(want)
    np.testing.assert_array_equal(row[:end], want[:end])
    assert np.all(row[end:] == tok.PAD)


def test_sampling_without_top_k_or_top_p_is_the_categorical_distribution():
  logits = jnp.array([[1.0, -0.5, 0.3, 2.0, 0.0]])
  key = jax.random.PRNGKey(6)
  # Its frequencies are the softmax's (chi-square, 20,000 draws).
  draws = sample_token(jnp.repeat(logits, 20000, 0), key, 0.7)
  counts = np.bincount(np.asarray(draws), minlength=5)
  expected = np.exp(np.asarray(logits[0], np.float64) / 0.7)
  expected *= 20000 / expected.sum()
  assert stats.chisquare(counts, expected).pvalue > 1e-3
  # Tokens of probability 0 (banned ones, at either end of the vocabulary) never come.
  banned = logits.at[0, jnp.array([0, 4])].set(-jnp.inf)
  assert set(np.unique(sample_token(jnp.repeat(banned, 20000, 0), key, 1.0))) == {1, 2, 3}
  # top-k keeps the k most likely tokens, top-p the smallest set reaching p.
  top2 = np.unique(sample_token(jnp.repeat(logits, 2000, 0), key, 1.0, top_k=2))
  assert set(top2) == {0, 3}
  probs = np.asarray(jax.nn.softmax(logits[0]))  # [.21, .05, .10, .57, .08]
  nucleus = np.unique(sample_token(jnp.repeat(logits, 2000, 0), key, 1.0, top_p=0.7))
  assert set(nucleus) == {3, 0} and probs[3] < 0.7 <= probs[3] + probs[0]


def test_sampling_stops_at_eos_and_pads_after():
  config = _tiny("llama2", vocab=6)  # few tokens: EOS comes quickly
  lm = _lm(config, 1.0, context=16)
  state = training.init_state(_params(config)["params"], lm.budget)
  rows = np.asarray(jax.jit(lm.sample, static_argnums=3)(state, None, jax.random.PRNGKey(7),
                                                         10)["tokens"])
  assert rows.shape == (10, 16) and np.all(rows[:, 0] == tok.BOS)
  ended = 0
  for row in rows:
    body = list(row[1:])
    if tok.EOS in body:
      ended += 1
      end = body.index(tok.EOS)
      assert all(t == tok.PAD for t in body[end + 1:])
      body = body[:end]
    assert tok.PAD not in body and tok.BOS not in body
  assert ended >= 5


def test_a_traced_temperature_samples_as_the_same_number_does():
  """A sweep's temperature reaches the sampler as a traced scalar: the same tokens as the
  Python number, and argmax at 0."""
  from collapse_jax.models.transformer_lm import sample_token
  logits = jax.random.normal(jax.random.PRNGKey(0), (64, 50))
  key = jax.random.PRNGKey(1)
  traced = jax.jit(lambda t: sample_token(logits, key, t, top_k=20, top_p=0.9))
  for t in (0.0, 0.7, 1.3):
    assert (traced(jnp.float32(t)) == sample_token(logits, key, t, top_k=20, top_p=0.9)).all()
  assert (traced(jnp.float32(0)) == jnp.argmax(logits, -1)).all()


@pytest.mark.parametrize("arch", ["gpt2", "llama2"])
def test_dense_layers_are_flax_dense_with_the_same_values_and_gradients(arch, monkeypatch):
  """`tfm.Dense` and the tied head (`ops.dense_vjps`) initialise, compute and differentiate
  as nn.Dense and nn.Embed.attend do: the same parameters and logits, gradients equal up to
  float rounding (theirs computed in another order)."""
  import flax.linen as nn
  config = tfm.TransformerConfig.preset(f"{arch}-tiny", 50)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, (2, 12)))

  def loss_and_grads():
    # Compiled whole, as training runs it (op by op would compile each operation); a new
    # function each call, so the patched layers below are traced, not a cached trace reused.
    def f(tokens):
      net = tfm.Transformer(config)
      params = net.init(jax.random.PRNGKey(0), tokens)["params"]
      loss = lambda p: jnp.mean(net.apply({"params": p}, tokens)[0] ** 2)
      return params, net.apply({"params": params}, tokens)[0], jax.grad(loss)(params)
    return jax.jit(f)(tokens)
  ours = loss_and_grads()
  monkeypatch.setattr(tfm, "_dense", lambda features, c, name: nn.Dense(
      features, use_bias=c.bias, dtype=c.dtype, name=name,
      kernel_init=nn.initializers.normal(0.02)))
  monkeypatch.setattr(tfm.dense_vjps, "attend", lambda x, table: jnp.dot(x, table.T))
  flax_ = loss_and_grads()
  for a, b in zip(jax.tree.leaves(ours[0]), jax.tree.leaves(flax_[0])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ours[1], flax_[1])
  for a, b in zip(jax.tree.leaves(ours[2]), jax.tree.leaves(flax_[2])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
