"""Causal LMs on TinyStories, pretrained from scratch each generation (Gerstgrasser et al.'s
main result). Corpus: data.path, default $COLLAPSE_JAX_TINYSTORIES.

Variants (comma-separated): a policy (default accumulate), ':smoke', ':cpu', a model preset,
'bos' | 'first_token', a temperature (see collapse_jax/lm_presets.py). E.g.
configs/tinystories.py:replace,cpu. configs/tinystories_<policy>.py are the same per policy.
"""
from collapse_jax import lm_presets


def get_config(arg=None):
  return lm_presets.tinystories(arg)
