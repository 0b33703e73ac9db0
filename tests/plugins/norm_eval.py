"""An evaluator outside collapse_jax: mean norm of a generation's samples, per seed."""
import jax
import numpy as np

from collapse_jax import rng


OPTIONS = ("type", "num_samples")


class MeanNorm:

  def __init__(self, options, context):
    loop, field, n = context.loop, context.loop.source.row_spec.data, options["num_samples"]
    self.calls = []
    draw = lambda s, t, r, g: loop.model.sample(s, t, rng.stream_key(r, "norm", g), n)[field]
    self._draw = jax.jit(jax.vmap(draw, in_axes=(0, 0, 0, None)))

  def __call__(self, states, tasks, roots, generation):
    samples = np.asarray(self._draw(states, tasks, roots, generation))
    return {"sample_norm": np.linalg.norm(samples, axis=-1).mean(axis=-1)}


def build(options, context):
  return MeanNorm(options, context)
