"""Causal LMs on TinyStories, pretrained from scratch each generation: Gerstgrasser et al.'s
main result (RESEARCH.md section 4).

Paper settings (the default): GPT-2 9M, SentencePiece vocabulary 8,000, rows of 512 tokens,
32 whole padded stories per step, one epoch per generation, AdamW (b2 0.95, weight decay
0.1) with warm-up and cosine decay [the optimizer and learning rate are not published: our
choice], ancestral sampling at temperature 1 from the first token of a real story, as many
synthetic stories per generation as real ones, 5 generations. The corpus is
``config.data.path`` (default $COLLAPSE_JAX_TINYSTORIES, else the small embedded corpus).

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy mix),
smoke (seconds, embedded corpus), cpu (the shared 1,092-story sample in minutes on 2 cores),
preset=<model preset> (gpt2-9m, llama2-12m, ...), prompt=bos|first_token,
temperature=<sampling temperature>. E.g. configs/tinystories.py:replace,cpu.
"""
from __future__ import annotations

import os

import ml_collections
from ml_collections import config_dict

from collapse_jax import presets
from collapse_jax.models.transformer_lm import PROMPTS
from collapse_jax.nets.transformer import PRESETS

PAPER_TRAIN_STORIES = 2_119_719   # TinyStories train
PAPER_TEST_STORIES = 21_990       # TinyStories validation


def tinystories_path() -> str | None:
  """$COLLAPSE_JAX_TINYSTORIES, or None (the embedded corpus)."""
  return os.environ.get("COLLAPSE_JAX_TINYSTORIES") or None


def get_config(arg=None):
  v = presets.variant(arg, flags=("smoke", "cpu"), numbers={"temperature": "temperature"},
                      choices={"preset": tuple(PRESETS), "prompt": PROMPTS})
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_generations = 5
  c.generations_per_chunk = 1
  c.n_real = c.n_synth = PAPER_TRAIN_STORIES
  c.data = ml_collections.ConfigDict({
      "source": "tinystories", "path": config_dict.placeholder(str), "format": "auto",
      "test_path": config_dict.placeholder(str), "vocab_size": 8000, "context": 512,
      "n_test": PAPER_TEST_STORIES, "limit": config_dict.placeholder(int),
      "tokenizer_dir": config_dict.placeholder(str)})
  # Typed placeholders: --config.data.path=... can set a field whose default is None.
  c.data.path = tinystories_path()
  c.model = ml_collections.ConfigDict({
      "name": "transformer_lm", "preset": "gpt2-9m", "dtype": "float32",
      "temperature": 1.0, "top_k": 0, "top_p": 1.0, "prompt": "first_token",
      "sample_batch_size": 256, "eval_batch_size": 64,
      **presets.training(batch_size=32, epochs=1.0, learning_rate=5e-4, optimizer="adamw",
                         b1=0.9, b2=0.95, weight_decay=0.1, lr_schedule="cosine",
                         warmup_steps=1000, grad_clip=1.0, ema_decay=0.0)})
  # Copying and diversity in token 4-grams: of the samples' 4-grams, the share seen in the
  # generation's training rows (a uniform subset of 20,000), and distinct over all.
  c.evals = ml_collections.ConfigDict(
      {"text": {"type": "text", "num_samples": 500, "stories_to_write": 10},
       "diagnostics": {"type": "diagnostics", "num_samples": 500, "training_rows": 20_000,
                       "classifier_steps": 1, "ngram": 4}})
  if v["cpu"]:
    # The shared sample (1,092 stories): 92 held out, 1,000 to train on; a 2-layer GPT-2
    # that learns the sample's style within a few minutes per generation on 2 cores.
    c.num_seeds = 1
    c.n_real = c.n_synth = 1000
    c.data.update({"vocab_size": 2048, "context": 384, "n_test": 92})
    c.model.update({"preset": "gpt2-tiny", "epochs": 3.0, "batch_size": 16,
                    "learning_rate": 2e-3, "warmup_steps": 30, "sample_batch_size": 250,
                    "eval_batch_size": 46})
    c.evals.text.update({"num_samples": 100, "stories_to_write": 5})
    c.evals.diagnostics.num_samples = 100
  if v["smoke"]:
    c.data.update({"path": None, "vocab_size": 256, "context": 64, "n_test": 32})
    c.num_generations, c.n_real, c.n_synth = 2, 64, 64
    c.model.update({"preset": "gpt2-smoke", "epochs": 0.0, "steps": 6, "batch_size": 8,
                    "warmup_steps": 2, "learning_rate": 3e-3, "sample_batch_size": 64,
                    "eval_batch_size": 32})
    c.evals.text.update({"num_samples": 8, "stories_to_write": 2})
    c.evals.diagnostics.num_samples = 8
  if v["preset"]:
    c.model.preset = v["preset"]
  if v["prompt"]:
    c.model.prompt = v["prompt"]
  if v["temperature"] is not None:
    c.model.temperature = v["temperature"]
  return c
