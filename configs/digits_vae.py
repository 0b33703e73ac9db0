"""The quick-start: a VAE on scikit-learn's embedded digits, any policy.

Variants (comma-separated): a policy name (default accumulate), 'smoke'. E.g.
    python launch/main.py --config=configs/digits_vae.py:replace --workdir=runs/digits_replace
    python launch/compare_policies.py --config=configs/digits_vae.py --workdir=runs/digits
"""
from collapse_jax import presets


def get_config(arg=None):
  parts = [p for p in (arg or "").split(",") if p]
  policies = [p for p in parts if p != "smoke"]
  return presets.digits_vae(policies[0] if policies else "accumulate",
                            "smoke" if "smoke" in parts else None)
