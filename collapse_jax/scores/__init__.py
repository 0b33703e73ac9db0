"""Curation scores (`collapse_jax.loop.curation`): one module per score, each exposing
``build(config, loop) -> Score`` and ``check(config, loop) -> str | None`` (why this model or
source cannot give the score, in a sentence). ``config.curation.score`` names one, or a
plug-in's dotted module path."""
