"""Causal LMs on TinyStories, pretrained from scratch each generation (Gerstgrasser et al.'s
main result), policy: replace. Corpus: data.path, default $COLLAPSE_JAX_TINYSTORIES.
Variants: ':smoke', ':cpu', a model preset, 'bos' | 'first_token', a temperature
(see collapse_jax/lm_presets.py).
The same as configs/tinystories.py:replace, kept under this name for existing scripts."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "tinystories.py:replace", arg)
