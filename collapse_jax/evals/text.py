"""Text diversity of each generation's model, and a file of its stories to read.

Options (``config.evals.<name>``): ``type="text"``, ``num_samples`` (stories drawn per seed
with key stream "text_eval", by the model's own sampler), ``stories_to_write`` (per seed,
into ``<workdir>/stories/generation_<g>.txt``).

Metrics per seed, over the ``num_samples`` stories (prompt and EOS excluded):
  distinct_1 .. distinct_4   distinct word n-grams / all word n-grams (words: the decoded
                             text split on whitespace), pooled over the stories
  unique_frac                fraction of distinct stories (as token sequences)
  mean_length                mean number of tokens
  eos_frac                   fraction that ended with EOS within the context
  retok_diff_frac            fraction whose tokens differ from encode(decode(tokens)): how
                             often re-tokenising synthetic text would change the pool
The source must have a ``tokenizer`` (`collapse_jax.data.tinystories`); the run's tokenizer
model is copied to ``<workdir>/tokenizer/`` so the stories can be decoded later, and a
resumed run whose retrained tokenizer differs from that copy is refused.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import numpy as np

from collapse_jax import rng, validate
from collapse_jax.data import tokenizer as tok
from collapse_jax.evals.base import Context


def story_ids(row: np.ndarray) -> tuple[list[int], bool]:
  """(the story's token ids after BOS, without EOS and PAD; whether it ended with EOS)."""
  body = [int(t) for t in row[1:]]
  ended = tok.EOS in body
  if ended:
    body = body[:body.index(tok.EOS)]
  return [t for t in body if t != tok.PAD], ended


def distinct_n(texts: list[str], n: int) -> float:
  """Distinct word n-grams / all word n-grams over ``texts`` (0 when there are none)."""
  grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 0.0


def text_metrics(rows: np.ndarray, tokenizer: tok.Tokenizer) -> dict[str, float]:
  """The metrics above for rows ``[n, context]`` of one seed."""
  stories = [story_ids(r) for r in rows]
  ids = [s for s, _ in stories]
  texts = [tokenizer.decode(s) for s in ids]
  out = {f"distinct_{n}": distinct_n(texts, n) for n in range(1, 5)}
  out["unique_frac"] = len(set(map(tuple, ids))) / len(ids)
  out["mean_length"] = float(np.mean([len(s) for s in ids]))
  out["eos_frac"] = float(np.mean([e for _, e in stories]))
  out["retok_diff_frac"] = float(np.mean([tokenizer.encode(t) != s for t, s in zip(texts, ids)]))
  return out


def _save_tokenizer(tokenizer: tok.Tokenizer, workdir: pathlib.Path) -> None:
  if jax.process_index() != 0:
    return
  directory = workdir / "tokenizer"
  for old in directory.glob("spm-*.model"):  # none when the folder does not exist
    if old.read_bytes() != tokenizer.model:
      raise validate.ConfigError(
          f"{old} holds a different tokenizer from the one trained now (another "
          "sentencepiece version?); set data.tokenizer_dir to that folder to reuse it.")
  directory.mkdir(parents=True, exist_ok=True)
  (directory / f"spm-{tokenizer.key}.model").write_bytes(tokenizer.model)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextEval:
  model: Any
  tokenizer: tok.Tokenizer
  workdir: pathlib.Path
  num_samples: int
  stories_to_write: int

  @functools.cached_property
  def _sample(self):
    n = self.num_samples
    return jax.jit(jax.vmap(lambda state, task, key: self.model.sample(state, task, key, n)))

  def _write(self, rows: np.ndarray, generation: int) -> None:
    if jax.process_index() != 0 or not self.stories_to_write:
      return
    lines = [f"# generation {generation}: {self.stories_to_write} of {self.num_samples} "
             "sampled stories per seed\n"]
    for s, seed_rows in enumerate(rows):
      for i, row in enumerate(seed_rows[:self.stories_to_write]):
        ids, ended = story_ids(row)
        end = "" if ended else " [no EOS: cut at the context]"
        lines.append(f"\n## seed {s}, story {i}{end}\n{self.tokenizer.decode(ids)}\n")
    directory = self.workdir / "stories"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"generation_{generation:03d}.txt").write_text("".join(lines))

  def __call__(self, states, tasks, roots, generation: int) -> dict[str, np.ndarray]:
    keys = jax.vmap(lambda r: rng.stream_key(r, "text_eval", generation))(roots)
    rows = np.asarray(jax.device_get(self._sample(states, tasks, keys)[self.model.field]))
    self._write(rows, generation)
    per_seed = [text_metrics(r, self.tokenizer) for r in rows]
    return {k: np.array([m[k] for m in per_seed]) for k in per_seed[0]}


def build(options, context: Context) -> TextEval:
  tokenizer, workdir = context.loop.source.tokenizer, pathlib.Path(context.workdir)
  _save_tokenizer(tokenizer, workdir)
  return TextEval(model=context.loop.model, tokenizer=tokenizer, workdir=workdir,
                  num_samples=int(options["num_samples"]),
                  stories_to_write=int(options["stories_to_write"]))


OPTIONS = ("type", "num_samples", "stories_to_write")
RANGES = {"num_samples": validate.COUNT, "stories_to_write": validate.Range(0, integer=True)}


def inapplicable(options, config, spec) -> str | None:
  """Why the evaluator cannot apply to ``spec``'s rows (evals/base.py then drops it)."""
  del options, config
  if spec is not None and len(spec.shape) != 1:
    return f"The text evaluator needs rows of token ids [context], not {spec.shape}."
  return None


def check_config(options, config, spec) -> str | None:
  return (inapplicable(options, config, spec)
          or validate.fields_problem(options, RANGES, "text "))
