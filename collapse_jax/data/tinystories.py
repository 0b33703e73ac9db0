"""TinyStories (Eldan & Li, 2023) as a Source: one padded story per fixed-length token row.

``config.data``: ``source="tinystories"``, ``path`` (None: the small embedded corpus below,
no file needed), ``format`` ("auto" | "eot_txt" | "lines_txt" | "json" | "parquet"),
``test_path`` (optional separate held-out file, e.g. TinyStories-valid.txt; else
``n_test`` stories of ``path`` chosen by a fixed permutation, seed 0), ``vocab_size``,
``context`` (tokens per row), ``n_test``, ``limit`` (read at most this many stories),
``tokenizer_dir`` (optional SentencePiece cache, see `tokenizer`).

Published forms read:
  eot_txt    TinyStories{V2-GPT4,}-{train,valid}.txt: stories separated by ``<|endoftext|>``
  lines_txt  one story per line, paragraphs separated by a blank (whitespace-only) line:
             ../shared/data/tinystories/tiny_stories.txt (1,092 stories by this rule)
  json       TinyStories_all_data/*.json shards (lists of objects with a "story" field) or
             one such file; .jsonl: one object per line ("story" or "text")
  parquet    the Hub's Parquet files (a "text" column), one file or a folder of them

Row ``[context]`` (uint16 when the vocabulary fits, else int32): BOS, the story's tokens,
EOS, then PAD (id 0) to the end. Stories are never packed together (the authors' setup). A
story with more than ``context - 2`` tokens keeps its first ``context - 1`` after BOS and
has no EOS; how many were cut is logged. Tokenisation runs through a grain pipeline.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import pathlib

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from collapse_jax import validate
from collapse_jax.errors import DataError
from collapse_jax.data import tokenizer as tok
from collapse_jax.data.source import RowSpec, Task

FORMATS = ("auto", "eot_txt", "lines_txt", "json", "parquet")
FIELD = "tokens"
_EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------------------
# Readers of the published forms.


def _read_utf8(path: pathlib.Path) -> str:
  data = path.read_bytes()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {e.start}).") from None


def split_eot(text: str) -> list[str]:
  """Stories of a ``<|endoftext|>``-separated text."""
  return [s.strip() for s in text.split(_EOT) if s.strip()]


def split_lines(text: str) -> list[str]:
  """Stories of a text with one story per line and blank lines between paragraphs.

  Two non-blank lines in a row start a new story; a blank (whitespace-only) line between
  them is a paragraph break inside the story, kept as ``"\\n\\n"``.
  """
  stories, paragraphs, blank = [], [], False
  for line in text.split("\n"):
    if not line.strip():
      blank = True
      continue
    if paragraphs and not blank:
      stories.append("\n\n".join(paragraphs))
      paragraphs = []
    paragraphs.append(line.strip())
    blank = False
  if paragraphs:
    stories.append("\n\n".join(paragraphs))
  return stories


def _json_stories(path: pathlib.Path) -> list[str]:
  text = _read_utf8(path)
  try:
    records = ([json.loads(l) for l in text.splitlines() if l.strip()]
               if path.suffix == ".jsonl" else json.loads(text))
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not valid JSON (line {e.lineno}).") from None
  if not isinstance(records, list):
    raise DataError(f"{path} holds no list of stories.")
  out = []
  for r in records:
    story = r.get("story", r.get("text")) if isinstance(r, dict) else r
    if not isinstance(story, str):
      raise DataError(f"{path} has a record without a 'story' or 'text' string.")
    if story.strip():
      out.append(story.strip())
  return out


def _parquet_stories(path: pathlib.Path) -> list[str]:
  import pyarrow.parquet as pq  # Imported here: only Parquet corpora need it.
  try:
    table = pq.read_table(path)
  except Exception as e:  # pyarrow raises several unrelated types for a bad file
    raise DataError(f"{path} is not a readable Parquet file.") from e
  column = "text" if "text" in table.column_names else "story"
  if column not in table.column_names:
    raise DataError(f"{path} has no 'text' or 'story' column.")
  return [s.strip() for s in table.column(column).to_pylist() if s and s.strip()]


def read_stories(path: str | pathlib.Path, fmt: str = "auto") -> list[str]:
  """The stories of ``path`` (a file, or a folder of JSON / Parquet shards), in file order."""
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"TinyStories path {path} does not exist.")
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl", ".parquet"))
    if not files:
      raise DataError(f"Folder {path} holds no .json, .jsonl or .parquet shards.")
    return [s for f in files for s in read_stories(f, fmt)]
  if fmt == "auto":
    fmt = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(path.suffix, "txt")
  if fmt == "json":
    return _json_stories(path)
  if fmt == "parquet":
    return _parquet_stories(path)
  text = _read_utf8(path)
  if fmt == "eot_txt" or (fmt == "txt" and _EOT in text):
    return split_eot(text)
  return split_lines(text)


# ----------------------------------------------------------------------------------------
# The embedded corpus: simple stories from a small grammar, enough to train a tokenizer
# and a tiny model in tests without any file.

_NAMES = ("Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam")
_ANIMALS = ("cat", "dog", "bird", "frog", "bunny", "duck")
_PLACES = ("the park", "the garden", "the forest", "the beach", "the farm")
_THINGS = ("a red ball", "a shiny stone", "a big box", "a little hat", "a blue kite")
_ENDINGS = ("They were happy and played all day.", "They became best friends.",
            "Then they went home to sleep.", "Everyone smiled and laughed.")


def embedded_stories() -> list[str]:
  """400 short stories, deterministic, with a paragraph break in some."""
  out = []
  combos = itertools.product(_NAMES, _ANIMALS, _PLACES, _THINGS, _ENDINGS)
  for i, (name, animal, place, thing, ending) in enumerate(itertools.islice(
      (c for j, c in enumerate(combos) if j % 12 == 0), 400)):
    body = (f"Once upon a time, there was a little {animal} named {name}. {name} went to "
            f"{place} and found {thing}.")
    if i % 3 == 0:
      body += f" \"Look!\" said {name}. The {animal} was very glad."
    sep = "\n\n" if i % 4 == 0 else " "
    out.append(body + sep + ending)
  return out


# ----------------------------------------------------------------------------------------
# Tokenised rows.


@dataclasses.dataclass(frozen=True)
class Corpus:
  train: np.ndarray        # [num_train, context] token rows
  test: np.ndarray         # [n_test, context]
  tokenizer: tok.Tokenizer
  truncated: int           # training + test stories cut at the context


def _row(ids: list[int], context: int) -> tuple[np.ndarray, bool]:
  row = np.zeros((context,), np.int32)  # PAD everywhere
  cut = len(ids) > context - 2
  body = [tok.BOS] + ids[:context - 1] if cut else [tok.BOS] + ids + [tok.EOS]
  row[:len(body)] = body
  return row, cut


def tokenize(stories: list[str], tokenizer: tok.Tokenizer, context: int, dtype: str
             ) -> tuple[np.ndarray, int]:
  """``[len(stories), context]`` rows and how many stories were truncated, via grain."""
  out = list(grain.MapDataset.source(stories)
             .map(lambda s: _row(tokenizer.encode(s), context))
             .to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=256)))
  if not out:
    return np.zeros((0, context), dtype), 0
  return np.stack([r for r, _ in out]).astype(dtype), sum(c for _, c in out)


def row_dtype(vocab_size: int) -> str:
  return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "int32"


@functools.lru_cache(maxsize=4)
def load(path: str | None, fmt: str, test_path: str | None, vocab_size: int, context: int,
         n_test: int, limit: int | None, tokenizer_dir: str | None) -> Corpus:
  """Reads, splits, trains the tokenizer on the training split and tokenises; cached, since
  validation loads it first."""
  if fmt not in FORMATS:
    raise DataError(f"Unknown TinyStories format {fmt!r}; choose one of {', '.join(FORMATS)}.")
  if context < 3:
    raise DataError(f"data.context must be at least 3 (BOS, a token, EOS), got {context}.")
  stories = (embedded_stories() if path is None else read_stories(path, fmt))[:limit]
  where = "the embedded corpus" if path is None else str(path)
  if not stories:
    raise DataError(f"{where} holds no stories.")
  if test_path:
    train, test = stories, read_stories(test_path, fmt)[:n_test]
    if len(test) < n_test:
      raise DataError(f"{test_path} has {len(test)} stories; n_test is {n_test}.")
  else:
    if len(stories) <= n_test:
      raise DataError(f"{where} has {len(stories)} stories, not more than the "
                      f"n_test={n_test} held out for testing.")
    # A fixed random subset, not the file's tail: a corpus's end can differ from the rest
    # (the shared sample's last stories are twice as long as the others).
    held_out = set(np.random.default_rng(0).permutation(len(stories))[:n_test].tolist())
    train = [s for i, s in enumerate(stories) if i not in held_out]
    test = [s for i, s in enumerate(stories) if i in held_out]
  tokenizer = tok.train(train, vocab_size, tokenizer_dir)
  dtype = row_dtype(vocab_size)
  train_rows, cut_train = tokenize(train, tokenizer, context, dtype)
  test_rows, cut_test = tokenize(test, tokenizer, context, dtype)
  tokens = int(np.sum(train_rows != tok.PAD))
  logging.info("TinyStories %s: %d training stories (%d tokens), %d test; %d + %d truncated "
               "at context %d.", where, len(train), tokens, len(test), cut_train, cut_test,
               context)
  return Corpus(train=train_rows, test=test_rows, tokenizer=tokenizer,
                truncated=cut_train + cut_test)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinyStoriesSource:
  """Each replicate shuffles the training rows once and hands out disjoint blocks (block 0:
  the initial real set; later blocks: fresh_real's new stories)."""
  path: str | None
  format: str = "auto"
  test_path: str | None = None
  vocab_size: int = 8000
  context: int = 512
  n_test: int = 1000
  limit: int | None = None
  tokenizer_dir: str | None = None

  @property
  def corpus(self) -> Corpus:
    return load(self.path, self.format, self.test_path, self.vocab_size, self.context,
                self.n_test, self.limit, self.tokenizer_dir)

  @property
  def tokenizer(self) -> tok.Tokenizer:
    return self.corpus.tokenizer

  @property
  def num_train(self) -> int:
    return len(self.corpus.train)

  @property
  def row_spec(self) -> RowSpec:
    # No mask field: PAD (id 0) marks padding, which keeps the pool at 2 bytes a token.
    return RowSpec(fields={FIELD: ((self.context,), row_dtype(self.vocab_size))}, data=FIELD)

  def consts(self, rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Training rows (``rows=(lo, hi)``: only those, None: all), test rows, and how often
    each token starts a training story over all of them (the ``first_token`` prompt
    strategy draws from these counts). The corpus is read and tokenised whole (the
    tokenizer trains on the whole training split), then sliced."""
    c = self.corpus
    first = np.bincount(c.train[:, 1].astype(np.int64), minlength=self.vocab_size)
    train = c.train[slice(*rows) if rows else slice(None)]
    return {"train": train, "test": c.test, "first_counts": first.astype(np.int32)}

  def task(self, consts, key: jax.Array) -> Task:
    # The source's own row count: placed on a mesh, consts["train"] has padding rows.
    perm = jax.random.permutation(key, self.num_train)
    return Task(test={FIELD: jnp.asarray(consts["test"])},
                aux={"perm": perm, "first_counts": jnp.asarray(consts["first_counts"])})

  def real(self, consts, task: Task, key: jax.Array, block: jax.Array, n: int):
    del key
    rows = jax.lax.dynamic_slice_in_dim(task.aux["perm"], block * n, n)
    return {FIELD: jnp.asarray(consts["train"])[rows]}


def build(data) -> TinyStoriesSource:
  return TinyStoriesSource(
      path=data.path, format=data.format,
      test_path=data.test_path, vocab_size=data.vocab_size,
      context=data.context, n_test=data.n_test, limit=data.limit,
      tokenizer_dir=data.tokenizer_dir)


RANGES = {
    "vocab_size": validate.Range(8, integer=True),
    "n_test": validate.COUNT,
    "limit": validate.Range(1, integer=True, note="None: every story"),
}


def check_config(config) -> str | None:
  d = config.data
  if d.format not in FORMATS:
    return f"Unknown TinyStories format {d.format!r}; choose one of {', '.join(FORMATS)}."
  return validate.fields_problem(d, RANGES, "data.")
