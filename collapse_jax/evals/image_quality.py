"""Evaluator ``image_quality``: sample quality of each generation of an image family.

Options: ``num_samples``, ``classifier_steps``, ``inception_weights`` (see
presets.image_quality). Per generation and seed, ``num_samples`` images are drawn from the
generation's model (key stream "quality") and compared with the held-out real test images:
  fd_classifier, precision, recall   in the feature space of a classifier trained once on
                                     the real training set (metrics/classifier.py)
  fid, inception_precision/recall    in Inception-v3 pool3 features, when converted
                                     weights are given (metrics/inception.py); otherwise
                                     reported unavailable, never estimated
Precision/recall are Kynkaanniemi et al.'s with k = 3. The classifier space needs a source
that offers ``labelled_train()`` (images with labels); the real side is the held-out test
set of the first replicate (image sources give every replicate the same one). The first
seed's samples are saved as a grid per generation in ``samples/`` (option ``grid``:
"display", the default, draws the grid with the model's ``display_sample`` where it has one,
e.g. a VAE's decoded means, key stream "display"; "samples" shows the metric draws), and the
real images once as ``samples/real.png``.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import logging

from collapse_jax import rng, validate
from collapse_jax.evals.base import Context
from collapse_jax.metrics import classifier, frechet, inception
from collapse_jax.metrics.precision_recall import knn_sq_radii, precision_recall
from collapse_jax.report import grids


_K = 3  # Kynkaanniemi et al.'s k for precision and recall
_GRID = 64  # images in a sample grid (8 x 8)


# Every option, each stated in the config (presets.image_quality gives them all).
OPTIONS = ("type", "num_samples", "inception_weights", "classifier_steps", "grid")
RANGES = {
    "num_samples": validate.Range(2, integer=True),  # a covariance needs two samples
    "classifier_steps": validate.COUNT,
}


def inapplicable(options, config, spec) -> str | None:
  """Why the evaluator cannot apply to ``spec``'s rows (evals/base.py then drops it)."""
  del options, config
  if len(spec.shape) != 3:
    return (f"The image_quality evaluator needs image rows [height, width, channels]; the "
            f"data field {spec.data!r} has shape {spec.shape}.")
  return None


def check_config(options, config, spec) -> str | None:
  problem = (inapplicable(options, config, spec)
             or validate.fields_problem(options, RANGES, "image_quality "))
  if not problem and options["grid"] not in ("display", "samples"):
    problem = f"image_quality's grid must be 'display' or 'samples', not {options['grid']!r}."
  return problem


def build(options, context: Context) -> "ImageQuality":
  return ImageQuality(options, context)


class ImageQuality:

  def __init__(self, options, context: Context):
    self.num_samples = options["num_samples"]
    self.workdir = context.workdir
    loop = context.loop
    self._field = field = loop.source.row_spec.data
    self._options, self._seed, self._source = options, context.config.seed, loop.source
    # name -> (feature fn, real features, their (mean, covariance), their k-NN sq. radii)
    self.spaces = None

    def draw(state, task, root, g):
      return loop.model.sample(state, task, rng.stream_key(root, "quality", g),
                               self.num_samples)[field]

    self._draw = jax.jit(jax.vmap(draw, in_axes=(0, 0, 0, None)))
    display = getattr(loop.model, "display_sample", None)
    self._draw_grid = None
    if options["grid"] == "display" and display is not None:
      # One seed's grid of what a reader should judge, from its own key stream: the metrics'
      # draws stay as they are.
      self._draw_grid = jax.jit(lambda state, task, root, g: display(
          state, task, rng.stream_key(root, "display", g), _GRID)[field])

  def _feature_spaces(self, real: np.ndarray) -> None:
    """The feature spaces and their real-side statistics, once (the first generation)."""
    self.spaces = {}
    train, labels = classifier.labelled_train(self._source)
    if labels is not None:
      apply, accuracy = classifier.load_or_train(
          self.workdir / "feature_classifier.npz", train, labels, self._seed,
          self._options["classifier_steps"])
      fn = lambda x: apply(x)[0]
      logging.info("Feature classifier: training accuracy %.3f.", accuracy)
      self._add_space("classifier", fn, classifier.batched_features(fn, real))
    else:
      logging.warning("The dataset has no labels: no classifier feature space.")
    fid = inception.FidFeatureExtractor.from_env(self._options["inception_weights"])
    if fid.available:
      self._add_space("inception", fid, fid(real))
    else:
      logging.warning("FID unavailable: %s", fid.reason)

  def _add_space(self, name, fn, real_features: np.ndarray) -> None:
    # The real side never changes: its statistics are computed once, not per generation.
    self.spaces[name] = (fn, real_features, frechet.feature_statistics(real_features),
                         knn_sq_radii(real_features, k=_K))

  def __call__(self, states, tasks, roots, generation: int) -> dict[str, np.ndarray]:
    """Per-seed metrics ``{name: [seeds]}`` of one generation; writes its sample grid."""
    if self.spaces is None:
      real = np.asarray(tasks.test[self._field][0])
      self._feature_spaces(real)
      grids.save_grid(real[:_GRID], self.workdir / "samples" / "real.png")
    samples = np.asarray(self._draw(states, tasks, roots, generation))
    grid = samples[0, :_GRID]
    if self._draw_grid is not None:
      first = lambda tree: jax.tree.map(lambda x: x[0], tree)
      grid = np.asarray(self._draw_grid(first(states), first(tasks), roots[0], generation))
    grids.save_grid(grid, self.workdir / "samples" / f"generation_{generation:03d}.png")
    out = {}
    for name, (fn, real, stats_real, real_radii) in self.spaces.items():
      per_seed = []
      for s in range(samples.shape[0]):
        fake = classifier.batched_features(fn, samples[s])
        pr = precision_recall(real, fake, k=_K, real_sq_radii=real_radii)
        per_seed.append((frechet.frechet_distance(*stats_real, *frechet.feature_statistics(fake)),
                         pr.precision, pr.recall))
      fd, p, r = np.array(per_seed, np.float64).T
      prefix = "" if name == "classifier" else "inception_"
      out |= {("fd_classifier" if name == "classifier" else "fid"): fd,
              f"{prefix}precision": p, f"{prefix}recall": r}
    return out
