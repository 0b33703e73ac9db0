"""Curation scores (`collapse_jax.loop.curation`), higher is better: one module per score,
each exposing
  build(config, loop) -> Score            a jittable ``(state, task, rows, key, pool) -> [n]``
  check(config, loop) -> str | None       why this model or source cannot give the score
  upper_bound(config, loop) -> float      optional: a value no row's score exceeds, so a
                                          threshold nothing passes is refused before the run
``config.curation.score`` names one, or a plug-in's dotted module path.
"""
