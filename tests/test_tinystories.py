"""TinyStories data, tokenizer, LM training and the text evaluator."""
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from collapse_jax import presets
from collapse_jax.data import tinystories, tokenizer as tok
from collapse_jax.evals import text
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView
from collapse_jax.models import transformer_lm

from conftest import ROOT

SHARED = ROOT.parent / "shared" / "data" / "tinystories" / "tiny_stories.txt"
STORIES = ["Once upon a time, a cat sat.\n\nIt was happy.", "Tom ran fast. He won!",
           "The end came — with a smile."]


def test_published_forms_read_the_same_stories(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  (tmp_path / "eot.txt").write_text("\n<|endoftext|>\n".join(STORIES) + "\n<|endoftext|>\n")
  (tmp_path / "lines.txt").write_text("\n".join(s.replace("\n\n", "\n \n") for s in STORIES))
  shards = tmp_path / "TinyStories_all_data"
  shards.mkdir()
  (shards / "data00.json").write_text(json.dumps([{"story": s, "source": "x"}
                                                  for s in STORIES[:2]]))
  (shards / "data01.json").write_text(json.dumps([{"story": STORIES[2]}]))
  (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
  pq.write_table(pa.table({"text": STORIES}), tmp_path / "train.parquet")
  for name in ("eot.txt", "lines.txt", "TinyStories_all_data", "s.jsonl", "train.parquet"):
    assert tinystories.read_stories(tmp_path / name) == STORIES, name


@pytest.mark.skipif(not SHARED.exists(), reason="the shared TinyStories sample is not here")
def test_shared_sample_has_1092_stories():
  stories = tinystories.read_stories(SHARED)
  assert len(stories) == 1092
  assert stories[1].startswith("Once upon a time, there was a little car named Beep.")


def test_tokenizer_round_trips_is_deterministic_and_cached(tmp_path):
  stories = tinystories.embedded_stories()
  a = tok.train(stories, 300)
  assert a.model == tok.train(stories, 300).model  # same split, same bytes
  assert a.vocab_size == 300
  for s in stories:
    assert a.decode(a.encode(s)) == s
  assert a.decode(a.encode("Xavier")) != "Xavier"  # unseen characters are UNK
  cached = tok.train(stories, 300, tmp_path)
  assert (tmp_path / f"spm-{a.key}.model").read_bytes() == a.model == cached.model
  (tmp_path / f"spm-{a.key}.model").write_bytes(b"reused")  # a cache hit does not retrain
  assert tok.train(stories, 300, tmp_path).model == b"reused"


def _source(**kw):
  d = dict(path=None, vocab_size=256, context=64, n_test=32) | kw
  return tinystories.TinyStoriesSource(**d)


def test_rows_are_bos_story_eos_pad_and_truncation_is_counted():
  source = _source()
  corpus = source.corpus
  assert corpus.train.dtype == np.uint16 and corpus.train.shape == (368, 64)
  assert source.row_spec.fields == {"tokens": ((64,), "uint16")}
  row = corpus.train[0]
  story = corpus.tokenizer.decode(row)
  assert story in tinystories.embedded_stories()
  ids = corpus.tokenizer.encode(story)
  np.testing.assert_array_equal(row[:len(ids) + 2], [tok.BOS] + ids + [tok.EOS])
  assert np.all(row[len(ids) + 2:] == tok.PAD) and corpus.truncated == 0
  short = _source(context=16).corpus
  assert short.truncated == 400 and not np.any(short.train == tok.EOS)


def test_real_blocks_are_disjoint():
  source = _source()
  consts = source.consts()
  task = source.task(consts, jax.random.PRNGKey(0))
  assert consts["first_counts"].sum() == 368
  blocks = [np.asarray(source.real(consts, task, None, b, 100)["tokens"]) for b in range(3)]
  keys = [set(map(bytes, b)) for b in blocks]
  assert not (keys[0] & keys[1]) and not (keys[1] & keys[2]) and not (keys[0] & keys[2])


def test_consts_rows_are_those_training_rows():
  source = _source()
  whole, part = source.consts(), source.consts(rows=(10, 25))
  np.testing.assert_array_equal(part["train"], whole["train"][10:25])
  # The test rows and the first-token counts stay those of the whole corpus.
  for k in ("test", "first_counts"):
    np.testing.assert_array_equal(part[k], whole[k])


def test_token_weighted_loss_falls_on_a_tiny_run():
  source = _source()
  config = ml_collections.ConfigDict({
      "data": {"vocab_size": 256, "context": 64},
      "model": {"preset": "gpt2-smoke", "prompt": "first_token", "temperature": 1.0,
                "top_k": 0, "top_p": 1.0, "sample_batch_size": 64, "eval_batch_size": 64,
                **presets.training(batch_size=16, steps=60, learning_rate=3e-3,
                                   ema_decay=0.0, optimizer="adamw", lr_schedule="cosine",
                                   warmup_steps=5, weight_decay=0.1)}})
  assert transformer_lm.check_config(config, source.row_spec) is None
  model = transformer_lm.build(config, None, source.row_spec)
  consts = source.consts()
  task = source.task(consts, jax.random.PRNGKey(0))
  pool = DataPool.create(source.real(consts, task, None, 0, 256),
                         PoolLayout(n_real=256, n_fresh=0, n_synth=8, num_blocks=1))
  view = TrainView(pool=pool, counts=(pool.generation == 0).astype(jnp.int32),
                   generation=jnp.int32(0))

  @jax.jit
  def run(key):
    state = model.init(key, task)
    before = model.evaluate(state, task, None)["test_loss"]
    state = model.fit(state, view, task, key)
    return before, model.evaluate(state, task, None), model.sample(state, task, key, 8)

  before, after, sample = run(jax.random.PRNGKey(1))
  assert before > 5.0 and after["test_loss"] < 3.0
  np.testing.assert_allclose(after["test_perplexity"], np.exp(after["test_loss"]), rtol=1e-6)
  # A trained model's stories start like real ones and mostly end.
  rows = np.asarray(sample["tokens"])
  assert text.text_metrics(rows, source.tokenizer)["eos_frac"] >= 0.5


def test_token_weighting_is_not_a_mean_of_story_means():
  logits = jnp.zeros((2, 3, 4))  # CE log(4) at every target
  tokens = jnp.array([[2, 1, 1, 3], [2, 3, 0, 0]])
  total, count = transformer_lm.token_cross_entropy(logits, tokens)
  assert count == 4 and np.isclose(total, 4 * np.log(4))


def test_text_metrics_and_story_file(tmp_path):
  t = tok.train(tinystories.embedded_stories(), 256)
  a, b = t.encode("the cat sat"), t.encode("the cat ran far")
  rows = np.zeros((3, 16), np.int32)
  for r, ids, end in ((0, a, True), (1, a, True), (2, b, False)):
    body = [tok.BOS] + ids + ([tok.EOS] if end else [])
    rows[r, :len(body)] = body
  m = text.text_metrics(rows, t)
  assert m["eos_frac"] == pytest.approx(2 / 3) and m["unique_frac"] == pytest.approx(2 / 3)
  assert m["distinct_1"] == pytest.approx(5 / 10) and m["distinct_4"] == pytest.approx(1 / 1)
  assert m["mean_length"] == pytest.approx((2 * len(a) + len(b)) / 3)
  assert m["retok_diff_frac"] == 0.0
  ev = text.TextEval(model=None, tokenizer=t, workdir=tmp_path, num_samples=3,
                     stories_to_write=2)
  ev._write(rows[None], 4)
  story_file = (tmp_path / "stories" / "generation_004.txt").read_text()
  assert "the cat sat" in story_file and "the cat ran far" not in story_file
