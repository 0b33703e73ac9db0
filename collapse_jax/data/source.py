"""Real data: the `Source` contract, the `RowSpec` of its rows, the per-replicate `Task`.

A source lives in ``collapse_jax/data/<name>.py`` and exposes ``build(data_config)``;
``config.data.source`` picks it. Families never ask which source they train on: they read
the source's `RowSpec` (which fields a row has, which one is the data, which is its mask).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import registry

Batch = Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowSpec:
  """What one training row of a source is.

  Attributes:
    fields: field name -> (per-row shape, dtype name), e.g. ``{"image": ((8, 8, 1),
      "float32")}``; a batch is a dict of these with a leading example axis.
    data: the field a generative model learns and samples ("image", "x", "tokens", ...).
    mask: a field of the same leading shape as ``data`` marking its valid entries (1) and
      padding (0), or None when every entry is valid; models exclude padding from noise,
      losses and means.
    aux: other fields a model conditions on and copies into its samples (e.g. a molecule's
      atom types and bonds), never generated.
    pixels: float32 fields in [-1, 1] that the pool stores as uint8 pixels (what the
      reference pipelines save as PNG files, at a quarter of the bytes): real rows are
      handed to it as uint8, samples are rounded onto the 256 levels when they are written
      (`to_pixels`), and models always see float32 batches (`from_pixels`, `loop.pool`).
  """
  fields: dict[str, tuple[tuple[int, ...], str]]
  data: str
  mask: str | None = None
  pixels: tuple[str, ...] = ()

  def __post_init__(self):
    for name in (self.data, self.mask, *self.pixels):
      if name is not None and name not in self.fields:
        raise ValueError(f"RowSpec field {name!r} is not among {sorted(self.fields)}.")

  @property
  def shape(self) -> tuple[int, ...]:
    """Per-row shape of the data field."""
    return self.fields[self.data][0]

  @property
  def aux(self) -> tuple[str, ...]:
    return tuple(k for k in self.fields if k not in (self.data, self.mask))

  def zeros(self, n: int) -> dict[str, np.ndarray]:
    """A batch of ``n`` zero rows (for shapes at init)."""
    return {k: np.zeros((n,) + s, d) for k, (s, d) in self.fields.items()}


def to_pixels(x):
  """float in [-1, 1] -> uint8 levels 0..255 (rounded, clipped); uint8 passes through.
  Host (numpy) arrays stay on the host, device arrays on the device."""
  if x.dtype == np.uint8:
    return x
  xp = np if isinstance(x, np.ndarray) else jnp
  return xp.clip(xp.round((xp.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# Level -> value, computed as the image loaders convert files (float32 division). A lookup,
# since XLA turns `u / 127.5` into a multiplication by the rounded reciprocal, which is off
# by an ulp for a fifth of the levels.
_LEVELS = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def from_pixels(u):
  """uint8 levels -> float32 in [-1, 1], bitwise as the image loaders convert files. Host
  (numpy) arrays stay on the host, device arrays on the device."""
  if isinstance(u, np.ndarray):
    return _LEVELS[u]
  return jnp.asarray(_LEVELS)[u.astype(jnp.int32)]


class Task(NamedTuple):
  """What one replicate is measured against.

  Attributes:
    test: held-out real data (a batch) for ``GenerativeModel.evaluate``.
    aux: arrays of the problem itself that models or metrics need, e.g. the fixed design
      and the true weights of linear regression; empty for datasets.
  """
  test: Batch
  aux: dict[str, jax.Array]


class Density(NamedTuple):
  """A source's true density in closed form, for oracle curation scores.

  Attributes:
    log_density: ``(task, rows) -> [n]`` log density of a batch of rows.
    upper_bound: a value no row's log density exceeds, over every replicate's task.
  """
  log_density: Any
  upper_bound: float


class Source(Protocol):
  """Real data for a run. ``consts`` are host arrays (a dataset) shared by all replicates."""

  # Rows available for training, or None for a generative source with no limit.
  num_train: int | None
  # What a row holds.
  row_spec: RowSpec

  def consts(self, rows: tuple[int, int] | None = None) -> Any:
    """Arrays passed once into the compiled run (not per replicate).

    A source with training rows (``num_train`` not None) returns a dict whose ``"train"``
    leaves have a leading axis of those rows, and accepts ``rows=(lo, hi)``: then those
    leaves hold rows ``lo..hi`` only (None: all; a source with none may take no argument).
    The driver places the consts on the mesh (`parallel.mesh.place_consts`): ``"train"``
    split by rows over the devices and padded with zero rows, each process of a multi-host
    run asking for its own devices' rows; every other leaf replicated.
    """

  def task(self, consts: Any, key: jax.Array) -> Task:
    """The replicate's test set and problem arrays. Rows of ``consts["train"]`` past
    ``num_train`` are padding: count rows with ``num_train``, never with its shape."""

  def real(self, consts: Any, task: Task, key: jax.Array, block: jax.Array, n: int) -> Batch:
    """``n`` real training rows; distinct ``block`` indices never share rows."""

  # Optionally, ``density() -> Density | None``: the true density where it has a closed form.


def source_module(name: str):
  return registry.lookup("data", name, "data source")
