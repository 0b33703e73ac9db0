"""The SentencePiece tokenizer of a text run: trained once on the real training split.

Ids: 0 = PAD (never a training target), 1 = UNK, 2 = BOS (starts every row), 3 = EOS
(ends every story). BPE with character coverage 1.0, identity normalisation and no
whitespace folding, so ``decode(encode(story)) == story`` for any text made of characters
seen in training; a newline is its own piece (TinyStories' paragraphs).

Training is deterministic (one thread, every story used, no sampling): the same training
split and vocabulary give the same model bytes. ``train`` keeps the model in memory and,
given a ``cache_dir``, stores it there as ``spm-<key>.model`` (key: sha256 of the training
text, the vocabulary size and these trainer options) and reuses it whenever that file
exists, so a resumed run gets the very model it started with even under another
sentencepiece version, and paper-scale corpora are trained once.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

from collapse_jax.errors import UserError
from collapse_jax.workdir import write_atomically

PAD, UNK, BOS, EOS = 0, 1, 2, 3

_TRAINER_OPTIONS = dict(
    model_type="bpe", character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
    num_threads=1, normalization_rule_name="identity", remove_extra_whitespaces=False,
    user_defined_symbols=["\n"], max_sentence_length=1 << 20, split_digits=True,
    input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)


class TokenizerError(UserError):
  """SentencePiece cannot build the asked-for tokenizer; the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A trained SentencePiece model (its serialised bytes) and its cache key."""
  model: bytes
  key: str

  @functools.cached_property
  def processor(self) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=self.model)

  @property
  def vocab_size(self) -> int:
    return self.processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text``, without BOS or EOS."""
    return self.processor.encode(text)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of ``ids``; PAD, BOS and EOS are dropped."""
    ids = [int(i) for i in ids if int(i) not in (PAD, BOS, EOS)]
    return self.processor.decode(ids)


def cache_key(texts: Sequence[str], vocab_size: int) -> str:
  h = hashlib.sha256(repr(sorted(_TRAINER_OPTIONS.items())).encode())
  h.update(f"vocab={vocab_size};".encode())
  for t in texts:
    h.update(t.encode("utf-8"))
    h.update(b"\x00")
  return h.hexdigest()[:20]


def train(texts: Sequence[str], vocab_size: int, cache_dir: str | pathlib.Path | None = None
          ) -> Tokenizer:
  """The tokenizer of ``texts`` (the training stories) with ``vocab_size`` pieces."""
  key = cache_key(texts, vocab_size)
  path = pathlib.Path(cache_dir) / f"spm-{key}.model" if cache_dir else None
  if path is not None and path.is_file():
    return Tokenizer(model=path.read_bytes(), key=key)
  out = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=out,
                                   vocab_size=vocab_size, **_TRAINER_OPTIONS)
  except RuntimeError as e:
    limit = re.search(r"value <= (\d+)", str(e))
    if limit:
      raise TokenizerError(
          f"data.vocab_size {vocab_size} is larger than SentencePiece can build from this "
          f"corpus (at most {limit.group(1)}); lower it.") from None
    raise TokenizerError(f"SentencePiece could not train a {vocab_size}-piece tokenizer on "
                         f"this corpus: {str(e).splitlines()[-1]}") from None
  tokenizer = Tokenizer(model=out.getvalue(), key=key)
  if path is not None:
    write_atomically(path, lambda f: f.write(tokenizer.model))
  return tokenizer
