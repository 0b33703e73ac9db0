"""The one-minute toy comparison: DDPM with a small MLP on 2-D 8 gaussians, 3 seeds, each
generation trained from scratch on the policy's pool; per generation the samples2d evaluator
scores 1000 samples (energy distance, sliced W2, modes covered, off-mode fraction) and
draws the scatter row ``<workdir>/plots/samples2d.png``. It is configs/toy_diffusion.py, resized.

Variants: the policy ``replace`` (default), ``accumulate`` or ``mix`` (with a lambda, default
0.5: e.g. ``:mix,lambda=0.5``), and ``smoke``. All three, compared:

    python launch/compare_policies.py --config=configs/toy_diffusion_8gaussians.py \
        --policies=replace,accumulate,mix --workdir=runs/toy8

then the scatter rows of the three runs with
``collapse_jax.report.scatter.scatter_comparison([...workdirs], "samples2d.png")``.
"""
from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval


def get_config(arg=None):
  v = presets.variant(arg, policy="replace", policy_names=("replace", "accumulate", "mix"))
  policy = v["policy"]
  c = presets.same_as(__file__, "toy_diffusion.py", f"{policy},smoke" if v["smoke"] else policy)
  # Set for every policy (only mix reads it), so that launch/compare_policies.py, which
  # swaps policy.name, runs mix with lambda 0.5 too.
  c.policy.mix_lambda = 0.5 if v["mix_lambda"] is None else v["mix_lambda"]
  c.evals.samples2d = samples2d_eval(1000, plot_every=2)
  if v["smoke"]:
    c.evals.samples2d = samples2d_eval(64)
    return c
  # Sized for about 20 s per policy on two CPU cores: fewer, smaller steps than
  # configs/toy_diffusion.py's 3000 x width 256 (which this toy does not need to show collapse).
  c.num_seeds, c.num_generations = 3, 8
  c.n_real = c.n_synth = 500
  c.data.n_test = 1000
  c.model.mlp.update({"width": 128, "depth": 2})
  c.model.update({"steps": 2000, "batch_size": 256, "learning_rate": 3e-3, "sampler_steps": 50})
  return c
