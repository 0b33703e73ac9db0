"""The current model's own log-likelihood of its candidates: the family's
``log_likelihood(state, task, rows, key) -> [n]`` (exact for the Gaussian, KDE, flow and
diffusion families; the VAE's one-sample ELBO, a lower bound). Curating by it keeps what the
model already finds most typical: Shumailov et al.'s low-temperature sampling, a self-reward."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelLikelihood:
  model: Any

  def __call__(self, state, task, rows, key, pool):
    del pool
    return self.model.log_likelihood(state, task, rows, key)


def build(config, loop) -> ModelLikelihood:
  del config
  return ModelLikelihood(loop.model)


def check(config, loop) -> str | None:
  if not hasattr(loop.model, "log_likelihood"):
    return (f"The {config.model.name} model has no log-likelihood, so it cannot be curated "
            "by curation.score=model_likelihood; choose another score.")
  return None
