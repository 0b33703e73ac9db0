"""Rows as the diffusion core sees them (data field, optional mask, aux fields), masked noise
and means, and the chunked ``lax.map`` every sampler and test loss runs in."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from collapse_jax.data.source import RowSpec


def expand(v: jax.Array, x: jax.Array) -> jax.Array:
  """``v`` (a scalar, ``[b]`` or a mask ``[b, ...prefix of x]``) -> broadcastable against x."""
  v = jnp.broadcast_to(v, x.shape[:max(jnp.ndim(v), 1)])
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def where_valid(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """``x`` with its padded entries set to 0 (``where``, so NaN padding is dropped too)."""
  return x if mask is None else jnp.where(expand(mask, x) > 0, x, 0)


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """``[b, ...] -> [b]``: the mean over each row's valid entries."""
  if mask is None:
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)
  m = jnp.broadcast_to(expand(mask, x), x.shape).astype(x.dtype).reshape(x.shape[0], -1)
  return jnp.sum(jnp.where(m > 0, x.reshape(m.shape), 0), 1) / jnp.maximum(jnp.sum(m, 1), 1)


def normal_like(key: jax.Array, shape: tuple[int, ...], mask: jax.Array | None = None,
                dtype=jnp.float32) -> jax.Array:
  """Standard normal noise of ``shape``, 0 on padding. With a mask ``[b, n]`` entry ``j``
  draws from ``fold_in(key, j)``: valid entries get the same noise however long the padding."""
  if mask is None:
    return jax.random.normal(key, shape, dtype)
  entry = shape[:1] + shape[mask.ndim:]
  z = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(key, j), entry, dtype),
               out_axes=1)(jnp.arange(math.prod(shape[1:mask.ndim])))
  return where_valid(z.reshape(shape), mask)


def map_chunks(fn: Callable[[jax.Array, Any], Any], xs: Any, size: int, chunk: int) -> Any:
  """``fn(start, block)`` by ``lax.map`` over blocks of at most ``chunk`` rows of ``xs``
  (leaves ``[size, ...]``); the last block is padded with the first rows, dropped after."""
  chunk = max(1, min(chunk, size))
  num = -(-size // chunk)
  pad = num * chunk - size
  blocks = jax.tree.map(
      lambda x: jnp.concatenate([x, x[:pad]]).reshape((num, chunk) + x.shape[1:]), xs)
  out = jax.lax.map(lambda a: fn(a[0], a[1]), (jnp.arange(num) * chunk, blocks))
  return jax.tree.map(lambda y: y.reshape((num * chunk,) + y.shape[2:])[:size], out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rows:
  """A source's `RowSpec` reduced to names (hashable, so a model can be a static argument)."""
  data: str
  mask: str | None = None
  aux: tuple[str, ...] = ()

  @classmethod
  def of(cls, spec: RowSpec) -> "Rows":
    return cls(data=spec.data, mask=spec.mask, aux=spec.aux)

  def split(self, batch: dict) -> tuple[jax.Array, jax.Array | None, dict]:
    """``(x [b, ...] with padding zeroed, mask or None, cond)``; cond: aux fields + mask."""
    cond = {k: batch[k] for k in self.aux + ((self.mask,) if self.mask else ())}
    return where_valid(batch[self.data], self.mask_of(cond)), self.mask_of(cond), cond

  def mask_of(self, cond: dict) -> jax.Array | None:
    return cond[self.mask] if self.mask else None
