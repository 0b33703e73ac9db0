"""2-D toy distributions (Bertrand et al.'s earlier work, Kazdan et al.'s KDE experiments).

Each sampler maps ``(key, n)`` to points ``[n, 2]``, in JAX, so real data is drawn inside the
compiled run. Scales follow scikit-learn's ``make_moons``/``make_circles``/``make_blobs`` and
the usual flow-matching toys (8 gaussians on a radius-2 circle, a 4x4 checkerboard).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import validate
from collapse_jax.data.source import Density, RowSpec, Task


def moons(key, n):
  kb, kt, kn = jax.random.split(key, 3)
  upper = jax.random.bernoulli(kb, 0.5, (n,))
  t = jnp.pi * jax.random.uniform(kt, (n,))
  x = jnp.where(upper, jnp.cos(t), 1 - jnp.cos(t))
  y = jnp.where(upper, jnp.sin(t), 0.5 - jnp.sin(t))
  return jnp.stack([x, y], 1) + 0.1 * jax.random.normal(kn, (n, 2))


def circles(key, n):
  kb, kt, kn = jax.random.split(key, 3)
  radius = jnp.where(jax.random.bernoulli(kb, 0.5, (n,)), 1.0, 0.5)
  t = 2 * jnp.pi * jax.random.uniform(kt, (n,))
  return radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], 1) + 0.05 * jax.random.normal(
      kn, (n, 2))


def blobs(key, n):
  kc, kn = jax.random.split(key)
  centres = jnp.array([[-2.0, -2.0], [2.0, -1.0], [0.0, 2.5]])
  return centres[jax.random.randint(kc, (n,), 0, 3)] + 0.5 * jax.random.normal(kn, (n, 2))


def swiss_roll(key, n):
  kt, kn = jax.random.split(key)
  t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(kt, (n,)))
  return jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], 1) / 5 + 0.1 * jax.random.normal(kn, (n, 2))


def eight_gaussians(key, n):
  kc, kn = jax.random.split(key)
  angles = 2 * jnp.pi * jax.random.randint(kc, (n,), 0, 8) / 8
  centres = 2 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
  return centres + 0.1 * jax.random.normal(kn, (n, 2))


def checkerboard(key, n):
  kx, ky, kc = jax.random.split(key, 3)
  x = 4 * jax.random.uniform(kx, (n,)) - 2
  y = jax.random.uniform(ky, (n,)) - jax.random.randint(kc, (n,), 0, 2) * 2.0
  # Shift y into the black squares of the column that x falls in.
  return jnp.stack([x, y + jnp.floor(x) % 2], 1) * 2


SAMPLERS = {"moons": moons, "circles": circles, "blobs": blobs, "swiss_roll": swiss_roll,
            "8gaussians": eight_gaussians, "checkerboard": checkerboard}

# The mode toys' equal-weight isotropic mixtures, ``name -> (centres [k, 2], std)``, for
# metrics and figures (metrics/sample_distances.py). The samplers above keep their own
# constants: changing how they compute a draw would move every golden metric by rounding.
MODES = {
    "8gaussians": (np.array([[2 * np.cos(a), 2 * np.sin(a)]
                             for a in 2 * np.pi * np.arange(8) / 8], np.float32), 0.1),
    "blobs": (np.array([[-2.0, -2.0], [2.0, -1.0], [0.0, 2.5]], np.float32), 0.5),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Toy2DSource:
  name: str
  n_test: int
  num_train = None
  row_spec = RowSpec(fields={"x": ((2,), "float32")}, data="x")

  def consts(self):
    return ()

  def task(self, consts, key: jax.Array) -> Task:
    return Task(test={"x": SAMPLERS[self.name](key, self.n_test)}, aux={})

  def real(self, consts, task: Task, key: jax.Array, block: jax.Array, n: int):
    del block
    return {"x": SAMPLERS[self.name](key, n)}

  def density(self) -> Density | None:
    """The mode toys' mixture density (`MODES`); None for the others."""
    if self.name not in MODES:
      return None
    centres, std = MODES[self.name]

    def log_density(task, rows):
      sq = jnp.sum((rows["x"][:, None, :] - centres[None]) ** 2, -1)  # [n, modes]
      return (jax.scipy.special.logsumexp(-sq / (2 * std ** 2), axis=1)
              - np.log(len(centres)) - np.log(2 * np.pi * std ** 2))

    # A mixture's density is at most its components' peak, 1 / (2 pi std^2).
    return Density(log_density, float(-np.log(2 * np.pi * std ** 2)))


def build(data) -> Toy2DSource:
  return Toy2DSource(name=data.name, n_test=data.n_test)


def check_config(config) -> str | None:
  if config.data.name not in SAMPLERS:
    return (f"Unknown 2-D toy {config.data.name!r}; choose one of "
            f"{', '.join(sorted(SAMPLERS))}.")
  return validate.fields_problem(config.data, {"n_test": validate.COUNT}, "data.")
