"""Collapse diagnostics beyond FID (evaluator type "diagnostics"), per generation and seed,
comparing ``num_samples`` samples of the generation's model (key stream "diagnostics")
with the rows it was trained on (at most ``training_rows`` of them, a uniform subset:
evals/base.py) and the held-out real rows (``task.test``). The math is
metrics/diagnostics.py.

Rows of numbers (points as they are; images in the feature space of the classifier the
image evaluator uses, trained once on the real labelled images for ``classifier_steps``
steps, else flattened pixels):

  memorized_share       share of samples whose nearest training row is closer than a third
                        of the distance to the second nearest (the diffusion memorization
                        criterion)
  nn_distance,          mean distance from a sample to its nearest training row, and
  nn_distance_heldout,  from a held-out real row to its nearest training row (the floor of
  nn_distance_ratio     a model that generalises); their ratio (< 1: samples hug the
                        training rows)
  train_entropy,        Kozachenko-Leonenko entropy (nats) of the training rows, and their
  train_duplicate_share share of exact repeats (Shi et al.: entropy falls as collapse sets
                        in)
  tail_recall,          of the held-out rows farther from their mean than its 95% quantile,
  tail_mass_ratio       the share some sample covers, and the samples' mass out there over
                        5% (Dohmatob et al.: tails vanish first)

Rows of token ids: ``ngram_seen_share`` (of the samples' ``ngram``-grams, the share that
occur in the training rows: copying), ``distinct_ngram_share`` (samples' distinct /
all), ``train_distinct_ngram_share`` (the same of the training rows).
"""
from __future__ import annotations

import jax
import numpy as np

from collapse_jax import rng, validate
from collapse_jax.data import tokenizer as tok
from collapse_jax.evals.base import Context
from collapse_jax.metrics import classifier
from collapse_jax.metrics import diagnostics as diag

OPTIONS = ("type", "num_samples", "training_rows", "classifier_steps", "ngram")
RANGES = {
    "num_samples": validate.Range(2, integer=True),  # nearest-neighbour statistics
    "training_rows": validate.Range(3, integer=True),
    "classifier_steps": validate.COUNT,
    "ngram": validate.COUNT,
}


def training_rows(options) -> int:
  return int(options["training_rows"])


class Diagnostics:

  def __init__(self, options, context: Context):
    self.model, spec = context.loop.model, context.loop.source.row_spec
    self.field = spec.data
    self.tokens = np.issubdtype(np.dtype(spec.fields[spec.data][1]), np.integer)
    self.ngram = int(options["ngram"])
    self.features = lambda x: x.reshape(x.shape[0], -1)
    images, labels = classifier.labelled_train(context.loop.source)
    if len(spec.shape) == 3 and labels is not None:
      apply, _ = classifier.load_or_train(None, images, labels, context.config.seed,
                                          int(options["classifier_steps"]))
      embed = lambda x: apply(x)[0]
      self.features = lambda x: classifier.batched_features(embed, x)
    n = int(options["num_samples"])
    self._draw = jax.jit(jax.vmap(
        lambda state, task, key: self.model.sample(state, task, key, n)[self.field]))

  def __call__(self, states, tasks, roots, generation: int, *, training
               ) -> dict[str, np.ndarray]:
    keys = jax.vmap(lambda r: rng.stream_key(r, "diagnostics", generation))(roots)
    samples = np.asarray(jax.device_get(self._draw(states, tasks, keys)))
    test = np.asarray(tasks.test[self.field])
    train, valid = np.asarray(training["rows"][self.field]), np.asarray(training["valid"])
    per_seed = [self._seed(samples[s], train[s][valid[s]], test[s])
                for s in range(samples.shape[0])]
    return {k: np.array([m[k] for m in per_seed], np.float64) for k in per_seed[0]}

  def _seed(self, samples, train, test) -> dict[str, float]:
    if self.tokens:
      n = self.ngram
      return {"ngram_seen_share": diag.ngram_seen_share(samples, train, n, pad_id=tok.PAD),
              "distinct_ngram_share": diag.distinct_ngram_share(samples, n, pad_id=tok.PAD),
              "train_distinct_ngram_share": diag.distinct_ngram_share(train, n,
                                                                      pad_id=tok.PAD)}
    samples, train, test = (self.features(np.asarray(x, np.float32))
                            for x in (samples, train, test))
    out = {**diag.memorization(samples, train, test), "train_entropy": diag.kl_entropy(train),
           "train_duplicate_share": diag.duplicate_share(train)}
    tails = diag.tail_coverage(test, samples)
    return out | {k: tails[k] for k in ("tail_recall", "tail_mass_ratio")}


def build(options, context: Context) -> Diagnostics:
  return Diagnostics(options, context)


def inapplicable(options, config, spec) -> str | None:
  del options, config
  if spec.mask or spec.aux:
    return ("The diagnostics compare whole rows; these rows have padding or conditioning "
            f"fields ({', '.join(filter(None, (spec.mask, *spec.aux)))}).")
  return None


def check_config(options, config, spec) -> str | None:
  del config, spec
  return validate.fields_problem(options, RANGES, "diagnostics ")
