"""collapse_jax: self-consuming (model collapse) training loops in JAX."""
import jax

# Partitionable threefry makes XLA:CPU take ~4 s to compile each vmapped random draw
# (0.3 s without); a run draws in a dozen places. Our keys never depend on array
# shapes or shardings, so the classic counter layout loses nothing.
jax.config.update("jax_threefry_partitionable", False)
