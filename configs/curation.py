"""Curated synthetic data in the loop (RESEARCH.md section 6; docs/curation.md): each
generation draws ``factor`` x the rows its policy writes and keeps the best by a score.

Ferbach et al. (NeurIPS 2024) predict that retraining on curated samples alone maximises
the reward and collapses diversity onto its maximisers, while real data in the loop keeps
the distribution stable. Two settings:

  data=toy     (default) KDE (bandwidth 0.05) on 2-D 8 gaussians (500 real rows, 3 seeds,
               10 generations),
               curated by the true density (score real_density: an oracle reward whose
               maximisers are the 8 mode centres); samples2d and diagnostics evaluators.
  data=digits  the quick-start's VAE on the embedded digits (configs/digits_vae.py),
               curated by a digit classifier's confidence in any class (score
               classifier); image quality and diagnostics in its feature space.

Variants (comma-separated): a policy (default replace), lambda=<mix lambda> (default 0.5),
data=toy|digits, rule=none|top|luce|threshold (default top), smoke. The comparison, 3
policies with and without curation:

    python launch/sweep.py --config=configs/curation.py:data=toy \\
        --sweep=policy.name=replace,accumulate,mix --sweep=curation.rule=none,top \\
        --workdir=runs/curation_toy
"""
import ml_collections

from collapse_jax import presets
from collapse_jax.evals.samples2d import samples2d_eval
from collapse_jax.loop.curation import RULES


def diagnostics(num_samples: int, training_rows: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "type": "diagnostics", "num_samples": num_samples, "training_rows": training_rows,
      "classifier_steps": 300, "ngram": 4})


def get_config(arg=None):
  v = presets.variant(arg, policy="replace",
                      choices={"data": ("toy", "digits"), "rule": RULES})
  smoke = ",smoke" if v["smoke"] else ""
  if v["data"] == "digits":
    c = presets.same_as(__file__, "digits_vae.py", v["policy"] + smoke)
    c.curation.update({"score": "classifier", "label": -1})
    c.evals.diagnostics = diagnostics(64 if v["smoke"] else 359, 4000)
  else:
    c = presets.base(v["policy"])
    c.num_seeds, c.num_generations, c.n_real = 3, 10, 500
    # Scott's rule on a whole mode's rows (62 per mode: 62^(-1/6) x 0.1); on the mixture
    # as a whole it gives 0.5, which smears the 8 modes into one ring.
    c.model = ml_collections.ConfigDict({"name": "kde", "bandwidth": 0.05})
    c.data = ml_collections.ConfigDict({"source": "toy2d", "name": "8gaussians",
                                        "n_test": 1000})
    c.curation.score = "real_density"
    c.evals.samples2d = samples2d_eval(1000, plot_every=0)
    c.evals.diagnostics = diagnostics(1000, 6000)
    if v["smoke"]:
      c.num_seeds, c.num_generations, c.n_real = 2, 3, 64
      c.evals.samples2d = samples2d_eval(64)
      c.evals.diagnostics = diagnostics(64, 500)
  c.policy.mix_lambda = 0.5 if v["mix_lambda"] is None else v["mix_lambda"]
  c.curation.rule = v["rule"] or "top"
  c.curation.factor = 4
  return c
