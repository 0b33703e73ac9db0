"""An experiment of plug-ins only: the outside mean family on the outside ring source, under
any policy (the README's example of a config for your own modules).

    PYTHONPATH=tests python launch/main.py --config=tests/plugins/ring_config.py:replace \
        --config.model.scale=0.3 --workdir=runs/ring
"""
import ml_collections

from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations, c.n_real = 2, 3, 32
  c.model = ml_collections.ConfigDict({"name": "plugins.mean_family", "scale": 0.5})
  c.data = ml_collections.ConfigDict({"source": "plugins.ring_source"})
  return c
