"""An oracle: the true log density of the source (``source.density()``), where the source
has one in closed form (the Gaussian source, the mode toys 8gaussians and blobs). Curating
by it is a perfect verifier of "looks real"."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RealDensity:
  log_density: Any   # (task, rows) -> [n]

  def __call__(self, state, task, rows, key, pool):
    del state, key, pool
    return self.log_density(task, rows)


def density(loop):
  """The source's `Density`, or None when it has no closed form."""
  return getattr(loop.source, "density", lambda: None)()


def build(config, loop) -> RealDensity:
  del config
  return RealDensity(density(loop).log_density)


def upper_bound(config, loop) -> float:
  del config
  return density(loop).upper_bound


def check(config, loop) -> str | None:
  if density(loop) is None:
    return (f"The {config.data.source} source has no closed-form density, so curation.score="
            f"{config.curation.score} cannot score its rows (sources with one: gaussian, and "
            "the 2-D toys 8gaussians and blobs).")
  return None
