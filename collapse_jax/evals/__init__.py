"""Per-generation host-side evaluators, one module per type (see evals/base.py)."""
