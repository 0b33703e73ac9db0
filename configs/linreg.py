"""Linear regression with a fixed design, fitted by OLS (Gerstgrasser et al., section 2):
d=10, T=100 rows, noise sigma2=1, 100 seeds, 10 generations; the closed-form test error of
each policy is drawn beside the measurements.

Variants (comma-separated): a policy (default accumulate: replace, accumulate,
accumulate_subsample, mix, fully_synthetic, fresh_real), lambda=<mix lambda> (policy mix),
smoke (4 seeds, 3 generations). E.g.
    python launch/main.py --config=configs/linreg.py:replace,smoke --workdir=runs/linreg
"""
import ml_collections

from collapse_jax import presets


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations = 100, 10
  c.model = ml_collections.ConfigDict({"name": "linreg"})
  c.data = ml_collections.ConfigDict({
      "source": "linear",
      "dim": 10,          # d
      "num_rows": 100,    # T, the fixed design's rows
      "sigma2": 1.0,      # label noise
      "n_test": 1000,
      "max_dim": 0,       # compiled width (0: dim); see collapse_jax/data/linear.py
  })
  # The fixed design is the training set: n_real (and n_synth, which follows it) follow
  # num_rows, also when it is overridden.
  c.n_real = c.data.get_ref("num_rows").identity()
  if v["smoke"]:
    c.num_seeds, c.num_generations = 4, 3
  return c
