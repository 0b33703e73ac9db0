"""Causal language models on token rows (Gerstgrasser et al.'s TinyStories experiment).

Rows are the source's data field, ``[context]`` token ids: BOS, the story, EOS, PAD (0)
(`collapse_jax.data.tokenizer`). A model is a `nets.transformer.Transformer` from a preset
(``config.model.preset``), trained from scratch on next-token cross-entropy weighted by
token (the sum over non-PAD targets divided by their count, not a mean of per-story means)
with the shared optax loop (AdamW, warm-up, cosine: ``config.model``'s budget fields).

Sampling runs inside jit: the prompt is prefilled once into a KV cache, then a
``lax.while_loop`` draws one token per step until every story has emitted EOS or the row
is full; tokens after EOS are PAD. The rule is plain ancestral sampling at ``temperature``
(1.0 the paper's; 0 exactly greedy), with top-k / top-p off unless set. PAD and BOS are
never drawn (no training row has them as a target). Prompt strategies: "bos" (every story
starts from BOS alone) and "first_token" (BOS then the first token of a real training
story, drawn from the training set's first-token counts: the reference's
``first_token_inclusive``).

Synthetic stories enter the pool as the token rows drawn here, never detokenised and
re-encoded: the `evals.text` evaluator measures how often the two would differ.

``evaluate``: ``test_loss`` (token-weighted CE on held-out real stories, nats) and
``test_perplexity`` = exp(test_loss).
"""
from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp

from collapse_jax import validate
from collapse_jax.data import tokenizer as tok
from collapse_jax.data.source import RowSpec, Task
from collapse_jax.loop.pool import TrainView
from collapse_jax.models import training
from collapse_jax.nets import transformer as tfm

PROMPTS = ("bos", "first_token")
CACHE_BLOCK = 64  # decoding's KV cache grows by this many positions at a time


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int = 0,
                 top_p: float = 1.0) -> jax.Array:
  """One token per row of ``logits [b, vocab]`` -> ``[b]`` int32.

  ``temperature == 0``: argmax. Otherwise a draw from softmax(logits / temperature),
  restricted to the ``top_k`` most likely tokens (0: all) and then to the smallest set
  whose probability reaches ``top_p`` (1.0: all). The draw is by inverse CDF, one uniform
  per row: the categorical distribution (up to float32 rounding of the CDF), like
  ``jax.random.categorical``, without the number per vocabulary entry its Gumbel-max draws.
  """
  greedy = lambda: jnp.argmax(logits, axis=-1).astype(jnp.int32)
  traced = isinstance(temperature, jax.Array)  # a sweep's input (`CompiledLoop`'s inputs)
  if not traced and temperature == 0:
    return greedy()
  token = _draw(logits / temperature, key, top_k, top_p)
  return jnp.where(temperature == 0, greedy(), token) if traced else token


def _draw(logits: jax.Array, key: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """`sample_token`'s draw from tempered ``logits [b, vocab]``."""
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the probability of the tokens before it is still below top_p.
    keep_sorted = jnp.cumsum(probs, axis=-1) - probs < top_p
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, -jnp.inf)
  cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
  u = jax.random.uniform(key, (*logits.shape[:-1], 1)) * cdf[..., -1:]
  # Token i is drawn iff cdf[i-1] <= u < cdf[i]: never one of probability 0, even at u = 0.
  return jnp.sum(cdf <= u, axis=-1).astype(jnp.int32)


def token_cross_entropy(logits: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum of CE over non-PAD targets, their count) of next-token predictions.

  logits ``[b, t-1, vocab]`` for inputs ``tokens[:, :-1]``; tokens ``[b, t]``.
  """
  targets = tokens[:, 1:]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  weight = (targets != tok.PAD).astype(jnp.float32)
  return jnp.sum(nll * weight), jnp.sum(weight)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerLM:
  net_config: tfm.TransformerConfig
  field: str
  context: int
  budget: training.Budget
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  prompt: str = "bos"
  sample_batch_size: int = 64
  eval_batch_size: int = 64

  @property
  def net(self) -> tfm.Transformer:
    return tfm.Transformer(self.net_config)

  def init(self, key, task: Task):
    tokens = jnp.zeros((1, self.context - 1), jnp.int32)
    return training.init_state(self.net.init(key, tokens)["params"], self.budget)

  def loss(self, params, batch, key):
    """(sum, count) token-weighted CE of a batch of rows ``[b, context]``."""
    del key
    tokens = batch[self.field].astype(jnp.int32)
    logits, _ = self.net.apply({"params": params}, tokens[:, :-1])
    return token_cross_entropy(logits, tokens)

  def fit(self, state, view: TrainView, task: Task, key):
    return training.train(state, view, key, self.loss, self.budget)

  # --- sampling ---

  def _prompt(self, task: Task, key, b: int) -> jax.Array:
    """``[b, p]`` prompts: BOS, then (first_token) a real story's first token."""
    bos = jnp.full((b, 1), tok.BOS, jnp.int32)
    if self.prompt == "bos":
      return bos
    counts = task.aux["first_counts"]
    first = jax.random.categorical(key, jnp.log(counts.astype(jnp.float32)), shape=(b,))
    return jnp.concatenate([bos, first[:, None].astype(jnp.int32)], axis=1)

  def generate(self, params, task: Task, key, b: int) -> jax.Array:
    """``[b, context]`` int32 rows: prompt, sampled tokens, EOS, PAD."""
    k_prompt, k_tokens = jax.random.split(key)
    prompt = self._prompt(task, k_prompt, b)
    p = prompt.shape[1]
    # The cache grows in blocks: a phase decodes up to position `end` with a cache of `end`
    # positions, so attention reads what has been written (+ < 1 block), not the whole
    # context (stories end long before it). One compiled loop body per phase.
    ends = [e for e in (*range(CACHE_BLOCK, self.context, CACHE_BLOCK), self.context) if e > p]
    cache = tfm.init_cache(self.net_config, b, ends[0], self.net_config.dtype)
    logits, cache = self.net.apply({"params": params}, prompt, 0, cache)
    rows = jnp.zeros((b, self.context), jnp.int32).at[:, :p].set(prompt)
    banned = jnp.zeros((self.net_config.vocab_size,), bool).at[
        jnp.array([tok.PAD, tok.BOS])].set(True)

    def cond(s, end):
      pos, _, _, _, done = s
      return (pos < end) & ~jnp.all(done)

    def body(s):
      pos, rows, cache, logits, done = s
      logits = jnp.where(banned, -jnp.inf, logits)
      # Keyed by position: the draw never depends on how the loop is run.
      new = sample_token(logits, jax.random.fold_in(k_tokens, pos), self.temperature,
                         self.top_k, self.top_p)
      new = jnp.where(done, tok.PAD, new)
      rows = jax.lax.dynamic_update_slice_in_dim(rows, new[:, None], pos, axis=1)
      done = done | (new == tok.EOS)
      logits, cache = self.net.apply({"params": params}, new[:, None], pos, cache)
      return pos + 1, rows, cache, logits[:, 0], done

    state = (jnp.int32(p), rows, cache, logits[:, -1], jnp.zeros((b,), bool))
    for end in ends:
      state = state[:2] + (tfm.grow_cache(state[2], end),) + state[3:]
      state = jax.lax.while_loop(functools.partial(cond, end=end), body, state)
    return state[1]

  def sample(self, state, task: Task, key, n: int):
    b = min(self.sample_batch_size, n)
    chunks = -(-n // b)
    rows = jax.lax.map(lambda i: self.generate(state["params"], task,
                                               jax.random.fold_in(key, i), b),
                       jnp.arange(chunks))
    return {self.field: rows.reshape(chunks * b, self.context)[:n]}

  # --- held-out loss ---

  def test_loss_sums(self, params, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(CE sum, token count) over rows ``tokens [n, context]``, in batches."""
    chex.assert_rank(tokens, 2)
    b = min(self.eval_batch_size, tokens.shape[0])
    chunks = -(-tokens.shape[0] // b)
    # PAD rows have no targets, so padding to whole batches changes neither sum.
    padded = jnp.pad(tokens.astype(jnp.int32), ((0, chunks * b - tokens.shape[0]), (0, 0)))
    sums = jax.lax.map(lambda x: self.loss(params, {self.field: x}, None),
                       padded.reshape(chunks, b, -1))
    return jnp.sum(sums[0]), jnp.sum(sums[1])

  def evaluate(self, state, task: Task, key):
    del key
    total, count = self.test_loss_sums(state["params"], task.test[self.field])
    loss = total / jnp.maximum(count, 1.0)
    return {"test_loss": loss, "test_perplexity": jnp.exp(loss)}


def build(config, layout=None, spec: RowSpec | None = None) -> TransformerLM:
  del layout
  m = config.model
  return TransformerLM(
      # model.dtype: one of training.DTYPES, checked with the budget.
      net_config=tfm.TransformerConfig.preset(m.preset, config.data.vocab_size,
                                              dtype=getattr(jnp, m.dtype)),
      field=spec.data if spec is not None else "tokens", context=config.data.context,
      budget=training.Budget.from_config(m), temperature=m.temperature,
      top_k=int(m.top_k), top_p=float(m.top_p), prompt=m.prompt,
      sample_batch_size=m.sample_batch_size, eval_batch_size=m.eval_batch_size)


RANGES = {
    # Finite: logits / inf are 0 or NaN, a degenerate draw (one-token stories).
    "temperature": validate.Range(0, note="0: greedy"),
    "top_k": validate.Range(0, integer=True, note="0: every token"),
    "top_p": validate.Range(0, 1, low_open=True, note="1: every token"),
    "sample_batch_size": validate.COUNT,
    "eval_batch_size": validate.COUNT,
}


def check_config(config, spec: RowSpec | None = None) -> str | None:
  m = config.model
  if spec is not None and len(spec.shape) != 1:
    return f"The transformer_lm model needs rows of token ids [context], not {spec.shape}."
  if m.preset not in tfm.PRESETS:
    return (f"Unknown transformer preset {m.get('preset')!r}; choose one of "
            f"{', '.join(tfm.PRESETS)}.")
  max_len = tfm.PRESETS[m.preset][-1]
  context = config.data.context
  if context > max_len:
    return (f"data.context {context} is above the maximum length {max_len} of model preset "
            f"{m.preset!r}.")
  problem = validate.fields_problem(m, RANGES, "model.")
  if problem:
    return problem
  if m.prompt not in PROMPTS:
    return f"Unknown prompt strategy {m.prompt!r}; choose one of {', '.join(PROMPTS)}."
  return training.check_budget(m)  # model.dtype too: the budget's compute dtype
