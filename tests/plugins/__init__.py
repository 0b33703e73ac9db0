"""Plug-ins defined outside collapse_jax, named by module path in configs (tests of the
architecture: a new family, source or evaluator touches only its own file)."""
