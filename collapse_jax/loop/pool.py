"""DataPool: the fixed-capacity, immutable dataset state that the generation loop scans over.

Layout (static, from the policy and the number of generations):

    rows [0, n_real)                        the initial real training set, generation 0
    rows [n_real, n_real + K * B)           K generation blocks of B = n_fresh + n_synth rows:
                                            block of generation g >= 1 sits in slot (g-1) % K,
                                            its first n_fresh rows real, the rest synthetic
    rows [used, capacity)                   padding, so capacity divides the device count

Policies that only need the latest generation keep K = 1 (a ring of one block); the
accumulating ones keep K = num_generations, and then a row's slot is also its identity, so a
pool grown for a longer run holds the same rows at the same places.

Pixel fields (`RowSpec.pixels`: images in [-1, 1]) are held as uint8 and decoded to float32
per batch (`TrainView.gather`, `TrainView.reduce`); samples are rounded onto the 256 levels
when written, as a PNG file would hold them.

Every reduction over the pool goes through `TrainView.reduce`, which sums fixed-size blocks
in generation order. That makes results bitwise independent of the capacity (XLA's own
reductions regroup sums when an axis gets longer, even with zero padding).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp

from collapse_jax.data.source import from_pixels, to_pixels

Batch = Any  # a pytree of arrays with a leading example axis


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolLayout:
  n_real: int
  n_fresh: int
  n_synth: int
  num_blocks: int
  multiple_of: int = 1

  @property
  def block_size(self) -> int:
    return self.n_fresh + self.n_synth

  @property
  def used(self) -> int:
    return self.n_real + self.num_blocks * self.block_size

  @property
  def capacity(self) -> int:
    return -(-self.used // self.multiple_of) * self.multiple_of

  def block_start(self, generation: jax.Array) -> jax.Array:
    """First row of the block holding ``generation`` (>= 1)."""
    return self.n_real + ((generation - 1) % self.num_blocks) * self.block_size

  def written_rows(self, block: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` written as ``block`` (0: the real set; g >= 1: the block of
    generation g), widened to multiples of ``multiple_of`` so that a slice of them splits
    evenly over the devices; empty when the block has no rows."""
    start, size = (0, self.n_real) if block == 0 else (self.block_start(block), self.block_size)
    if not size:
      return start, start
    m = self.multiple_of
    return start // m * m, min(-(-(start + size) // m) * m, self.capacity)


@flax.struct.dataclass
class DataPool:
  """Examples plus their provenance.

  Attributes:
    data: pytree, leaves ``[capacity, ...]``.
    generation: ``[capacity]`` int32: generation whose training set the row joined
      (0 for the initial real set), -1 for empty rows.
    real: ``[capacity]`` bool: row is real data (initial or fresh), not model output.
    pixels: names of the data fields held as uint8 pixels (`RowSpec.pixels`).
  """
  data: Batch
  generation: jax.Array
  real: jax.Array
  layout: PoolLayout = flax.struct.field(pytree_node=False)
  pixels: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

  @classmethod
  def create(cls, real: Batch, layout: PoolLayout, pixels: tuple[str, ...] = ()) -> DataPool:
    """A pool holding ``real`` (a dict, leaves ``[n_real, ...]``) as generation 0."""
    n = layout.n_real
    chex.assert_tree_shape_prefix(real, (n,))
    rows = jnp.arange(layout.capacity)
    pool = cls(data={}, generation=jnp.where(rows < n, 0, -1).astype(jnp.int32),
               real=rows < n, layout=layout, pixels=pixels)
    pad = lambda x: jnp.pad(x, [(0, layout.capacity - n)] + [(0, 0)] * (x.ndim - 1))
    return pool.replace(data=jax.tree.map(pad, pool.encode(real)))

  def encode(self, batch: Batch) -> Batch:
    """``batch`` as the pool stores it (pixel fields as uint8)."""
    return {k: to_pixels(v) if k in self.pixels else v for k, v in batch.items()}

  def decode(self, batch: Batch) -> Batch:
    """Stored rows as models see them (pixel fields as float32 in [-1, 1])."""
    return {k: from_pixels(v) if k in self.pixels else v for k, v in batch.items()}

  def write_block(self, generation: jax.Array, fresh: Batch | None,
                  synth: Batch | None) -> DataPool:
    """Returns a pool with ``generation``'s block (fresh real rows, then synthetic) written."""
    lay = self.layout
    parts = [b for b in (fresh, synth) if b is not None]
    if not parts:
      return self
    block = jax.tree.map(lambda *xs: jnp.concatenate(xs), *map(self.encode, parts))
    chex.assert_tree_shape_prefix(block, (lay.block_size,))
    start = lay.block_start(generation)
    update = lambda x, b: jax.lax.dynamic_update_slice_in_dim(x, b.astype(x.dtype), start, 0)
    tags = jnp.full((lay.block_size,), generation, jnp.int32)
    real = jnp.arange(lay.block_size) < lay.n_fresh
    return self.replace(
        data=jax.tree.map(update, self.data, block),
        generation=update(self.generation, tags),
        real=update(self.real, real))

  def resized(self, layout: PoolLayout) -> DataPool:
    """The same rows in a pool of a larger layout (a run continued to more generations)."""
    old = self.layout
    same_blocks = (old.n_real, old.block_size) == (layout.n_real, layout.block_size)
    if not same_blocks or layout.num_blocks < old.num_blocks:
      raise ValueError(f"Cannot move a pool of layout {old} into {layout}.")
    pad = lambda x, fill: jnp.concatenate(
        [x[:old.used], jnp.full((layout.capacity - old.used,) + x.shape[1:], fill, x.dtype)])
    return self.replace(data=jax.tree.map(lambda x: pad(x, 0), self.data),
                        generation=pad(self.generation, -1), real=pad(self.real, False),
                        layout=layout)


def draw_rows(counts: jax.Array, key: jax.Array, n: int) -> jax.Array:
  """``[n]`` int32 indices drawn with probability proportional to ``counts [rows]``.

  Inverse CDF over integer counts: exact, and independent of trailing zero rows.
  """
  cdf = jnp.cumsum(counts)
  u = jax.random.randint(key, (n,), 0, jnp.maximum(cdf[-1], 1))
  return jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)


@flax.struct.dataclass
class TrainView:
  """What a policy hands the model: the pool and how often each row counts this generation.

  Attributes:
    pool: the DataPool.
    counts: ``[capacity]`` int32 multiplicity of each row in the training set (0 = unused).
    generation: int32 scalar, the generation being trained; blocks of later generations
      do not exist yet. The same for every seed, so loops bounded by it stay unbatched
      under vmap.
    whole_blocks: static promise that counts are 0 or 1 and constant over the real block
      and over each generation block's fresh and synthetic parts; models may exploit it
      (linear regression then reuses one Cholesky factor for every generation).
    batch_sharding: how `gather`'s batches are split over the devices (None: left to
      XLA, which replicates a batch gathered with replicated indices: every device would
      then compute the whole batch, with no data parallelism).
  """
  pool: DataPool
  counts: jax.Array
  generation: jax.Array
  whole_blocks: bool = flax.struct.field(pytree_node=False, default=False)
  batch_sharding: Any = flax.struct.field(pytree_node=False, default=None)

  def size(self) -> jax.Array:
    """Number of training examples (with multiplicity), int32 scalar."""
    return self.counts.sum()

  def reduce(self, fn: Callable[[Batch, jax.Array], Any]) -> Any:
    """Sums ``fn(rows, counts)`` over the pool in fixed-size blocks, in generation order.

    ``fn`` maps a batch (leaves ``[rows, ...]``) and its counts ``[rows]`` to a pytree of
    partial sums; it is called on the real block and on each generation block. Empty
    blocks are skipped, so the result is bitwise independent of the pool's capacity.
    """
    lay = self.pool.layout
    data, counts = self.pool.data, self.counts
    part = lambda rows, c: fn(self.pool.decode(rows), c)
    total = part(jax.tree.map(lambda x: x[:lay.n_real], data), counts[:lay.n_real])
    if lay.num_blocks == 0 or lay.block_size == 0:
      return total
    blocked = lambda x: x[lay.n_real:lay.used].reshape(
        (lay.num_blocks, lay.block_size) + x.shape[1:])
    data, counts = jax.tree.map(blocked, data), blocked(counts)
    # Generation g's pool holds blocks of generations 1..g only: an accumulating pool is
    # mostly empty early on, and g (unlike a bound read off the counts) is not batched.
    end = jnp.minimum(self.generation, lay.num_blocks)

    def add_block(k, acc):
      take = lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False)
      block_counts = take(counts)
      partial = part(jax.tree.map(take, data), block_counts)
      used = jnp.any(block_counts > 0)
      return jax.tree.map(lambda a, p: jnp.where(used, a + p, a), acc, partial)

    return jax.lax.fori_loop(0, end, add_block, total)

  def draw(self, key: jax.Array, n: int) -> jax.Array:
    """``[n]`` int32 row indices drawn uniformly, with replacement, from the training set."""
    return draw_rows(self.counts, key, n)

  def subset(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """A uniform subset, without replacement, of the training rows: ``(rows [m] int32,
    valid [m] bool)``, m = min(n, capacity); every training row when there are at most m
    (the rest invalid). Each slot's priority comes from its own key, so the subset does not
    depend on the pool's capacity."""
    slots = jnp.arange(self.counts.shape[0])
    priority = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(slots)
    priority, rows = jax.lax.top_k(jnp.where(self.counts > 0, priority, -1.0),
                                   min(n, slots.shape[0]))
    return rows.astype(jnp.int32), priority >= 0

  def gather(self, rows: jax.Array) -> Batch:
    """The examples at ``rows`` (``[n]``): a batch with leaves ``[n, ...]``."""
    batch = self.pool.decode(jax.tree.map(lambda x: x[rows], self.pool.data))
    if self.batch_sharding is None:
      return batch
    return jax.lax.with_sharding_constraint(batch, self.batch_sharding)

  def stats(self) -> dict[str, jax.Array]:
    """Size and make-up of the training set, for the metrics."""
    size = self.size()
    synthetic = jnp.sum(jnp.where(self.pool.real, 0, self.counts))
    return {"train_examples": size,
            "train_frac_synthetic": synthetic / jnp.maximum(size, 1)}
