"""Causal LMs on TinyStories, pretrained from scratch each generation (Gerstgrasser et al.'s
main result), policy: replace. Corpus: data.path, default $COLLAPSE_JAX_TINYSTORIES.
Variants: ':smoke', ':cpu', a model preset, 'bos' | 'first_token', a temperature
(see collapse_jax/lm_presets.py)."""
from collapse_jax import lm_presets


def get_config(arg=None):
  return lm_presets.tinystories("replace", arg)
