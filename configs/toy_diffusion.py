"""DDPM or EDM with a small time-conditioned MLP on 2-D 8 gaussians, trained from scratch each
generation (Gerstgrasser et al.'s protocol): 1000 real rows, MLP width 256 x 3 residual
layers, Adam 1e-3, batch 256, 3000 steps, 5 seeds, 20 generations; DDIM with 100 steps
(DDPM) or Heun with 18 (EDM, EDM preconditioning); the samples2d evaluator on 1000 samples
per generation. configs/toy_diffusion_8gaussians.py is the one-minute comparison built on it.

Variants (comma-separated): a policy (default accumulate), process=ddpm (default) or
process=edm, lambda=<mix lambda> (policy mix), smoke (2 seeds, 2 generations, 64 rows, a
tiny MLP). E.g. configs/toy_diffusion.py:replace,process=edm,smoke.
"""
import ml_collections

from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval


def get_config(arg=None):
  v = presets.variant(arg, choices={"process": ("ddpm", "edm")})
  kind = v["process"] or "ddpm"
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_seeds, c.num_generations = 5, 20
  c.n_real = c.n_synth = 1000
  c.data = ml_collections.ConfigDict({"source": "toy2d", "name": "8gaussians", "n_test": 1000})
  # EDM preconditioning: sigma_data 1 is about the toys' per-coordinate standard deviation.
  c.model = presets.diffusion_model(
      kind, "mlp", {"width": 256, "depth": 3}, steps=3000, batch_size=256, learning_rate=1e-3,
      ema_decay=0.999, inference_batch_size=1000,
      **({} if kind == "ddpm" else {"precond": "edm", "sigma_data": 1.0}))
  if v["smoke"]:
    c.num_seeds, c.num_generations, c.n_real, c.n_synth = 2, 2, 64, 64
    c.data.n_test = 64
    c.model.mlp.update({"width": 32, "depth": 1})
    c.model.update({"steps": 5, "batch_size": 32, "sampler_steps": 4})
  c.evals.samples2d = samples2d_eval(64 if v["smoke"] else 1000)
  return c
