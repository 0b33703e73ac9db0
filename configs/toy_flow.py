"""OT conditional flow matching with a small MLP on 2-D moons, trained from scratch each
generation (Gerstgrasser et al.'s protocol): 1000 real rows, MLP width 256 x 3, Adam 1e-3,
batch 256, 2000 steps, dopri5 sampling, 3 seeds, 10 generations; exact test NLL, and the
samples2d evaluator on 1000 samples per generation.

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy
mix), smoke (2 seeds, 3 generations, 64 rows, a tiny MLP). E.g.
configs/toy_flow.py:replace,smoke.
"""
import ml_collections

from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval


def get_config(arg=None):
  v = presets.variant(arg)
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations = 3, 10
  c.n_real = c.n_synth = 1000
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": "moons", "n_test": 500})
  c.model = presets.flow_model("mlp", {"width": 256, "depth": 3}, exact_nll=True, steps=2000,
                               batch_size=256, learning_rate=1e-3, ema_decay=0.999,
                               sinkhorn_eps=3e-3, sinkhorn_iters=100, inference_batch_size=1000)
  if v["smoke"]:
    c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 3, 64, 64
    c.data.n_test = 64
    c.model.mlp.update({"width": 16, "depth": 1})
    c.model.update({"steps": 3, "batch_size": 16, "sinkhorn_iters": 20, "eval_times": 2,
                    "rtol": 1e-3, "atol": 1e-3})
  c.evals.samples2d = samples2d_eval(64 if v["smoke"] else 1000)
  return c
