"""Plug-ins defined outside collapse_jax, named by module path in configs (tests of the
architecture: a new family, source, evaluator or policy touches only its own file), and
ring_config.py, a config of plug-ins only."""
