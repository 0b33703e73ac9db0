"""A classifier's confidence: the CNN of metrics/classifier.py, trained once on the source's
real labelled training images (``curation.steps`` Adam steps, from the run's seed; kept in
the shared classifier cache, so the runs of a comparison train it once). The score is the
softmax probability of class ``curation.label``, or with ``label=-1`` of the most likely
class (a reward for "looks like some digit"). Sources with labels: digits, MNIST, CIFAR-10."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
from absl import logging

from collapse_jax.metrics import classifier


@dataclasses.dataclass(frozen=True)
class Confidence:
  apply: Any    # images [n, h, w, c] -> (features, logits [n, classes])
  field: str
  label: int    # -1: any class

  def __call__(self, state, task, rows, key, pool):
    del state, task, key, pool
    p = jax.nn.softmax(self.apply(rows[self.field])[1], axis=-1)
    return p.max(-1) if self.label < 0 else p[:, self.label]


def build(config, loop) -> Confidence:
  images, labels = classifier.labelled_train(loop.source)
  apply, accuracy = classifier.load_or_train(None, images, labels, config.seed,
                                             config.curation.steps)
  logging.info("Curation classifier: training accuracy %.3f.", accuracy)
  return Confidence(apply, loop.source.row_spec.data, int(config.curation.label))


def upper_bound(config, loop) -> float:
  del config, loop
  return 1.0


def check(config, loop) -> str | None:
  _, labels = classifier.labelled_train(loop.source)
  if labels is None:
    return (f"The {config.data.source} source has no labelled training images, so "
            "curation.score=classifier has nothing to train on.")
  classes = int(labels.max()) + 1
  if not -1 <= config.curation.label < classes:
    return (f"curation.label must be -1 (any class) or a class in [0, {classes - 1}], got "
            f"{config.curation.label}.")
  return None
