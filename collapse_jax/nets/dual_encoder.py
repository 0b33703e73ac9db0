"""GeoDiff's dual encoder (Xu et al., ICLR 2022, ``DualEncoderEpsNetwork``) on dense padded
molecules, in Flax Linen.

Shapes: ``n`` molecules of ``A`` (padded) atoms; atoms ``[n, A]``, pairs ``[n, A, A]``.
Every pair (i, j), i != j, of real atoms may be an edge; masks pick the edge sets GeoDiff's
sparse graphs hold:

  local   atoms at most 3 bonds apart (``edge_type > 0``: bonds and GeoDiff's order-3
          extension), the GIN encoder's graph;
  global  local edges plus the radius graph (distance <= cutoff), SchNet's graph; its
          scores count only on the radius edges that are not local.

Both encoders embed atoms by atomic number and edges as MLP(distance) * Embed(edge type)
(GeoDiff's ``MLPEdgeEncoder``; GeoDiff's forward uses its global edge encoder for the local
branch too, so there is one here). SchNet: ``num_convs`` continuous-filter interactions with
the smooth cosine cutoff 0.5 (cos(pi d / cutoff) + 1); GIN: ``num_convs_local`` GINE layers
with shortcuts. Each branch maps the pair feature [h_i * h_j, e_ij] by an MLP (H, H/2, 1) to
one scalar per pair, and `eq_transform` turns pair scalars into per-atom vectors along the
distance gradient, so they rotate with the molecule and ignore translations and padding.
Like GeoDiff's diffusion network, nothing here sees the time step: the noisy distances
carry the noise level.

The pair layers run as the custom VJPs of ops/graph_vjps.py (XLA:CPU's autodiff of them is
slow): they keep only a few pair tensors for the backward pass and recompute the rest; the
values are those of the plain Flax layers (parameters identical, outputs equal up to float
rounding).
"""
from __future__ import annotations

import math
from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.data.molecule_chemistry import NUM_EDGE_TYPES
from collapse_jax.ops.graph_vjps import (cfconv, edge_features, gin_messages, pair_heads,
                                         shifted_softplus)

NUM_ELEMENTS = 100  # atomic-number embedding rows, as GeoDiff


def pair_mask(atom_mask: jax.Array) -> jax.Array:
  """``[n, A]`` -> ``[n, A, A]`` bool: both atoms real and distinct."""
  m = atom_mask > 0
  eye = jnp.eye(m.shape[-1], dtype=bool)
  return m[..., :, None] & m[..., None, :] & ~eye


def distances(pos: jax.Array, valid: jax.Array) -> jax.Array:
  """``[n, A, A]`` pair distances, 0 on invalid pairs (with finite gradients there)."""
  diff = pos[..., :, None, :] - pos[..., None, :, :]
  sq = jnp.sum(diff * diff, axis=-1)
  return jnp.where(valid, jnp.sqrt(jnp.where(valid, sq, 1.0)), 0.0)


def eq_transform(score: jax.Array, pos: jax.Array, dist: jax.Array, edges: jax.Array
                 ) -> jax.Array:
  """Per-atom vectors ``[n, A, 3]`` from pair scalars ``score [n, A, A]`` on ``edges``.

  GeoDiff's eq_transform with both directions of every edge present: atom i receives
  sum_j (s_ij + s_ji) (x_i - x_j) / d_ij, the chain rule through d_ij = |x_i - x_j|.
  """
  s = jnp.where(edges, score, 0.0)
  w = (s + jnp.swapaxes(s, -1, -2)) / jnp.where(edges, dist, 1.0)
  # A multiply-reduce, not an einsum: a batched [A, A] x [A, 3] dot is slower on XLA:CPU.
  return pos * jnp.sum(w, -1, keepdims=True) - jnp.sum(w[..., None] * pos[..., None, :, :], -2)


def edge_sets(pos: jax.Array, edge_type: jax.Array, atom_mask: jax.Array, cutoff: float
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(dist, local, global)`` ``[n, A, A]`` of positions ``pos [n, A, 3]``: pair distances,
  edges at most 3 bonds apart, and the radius-graph edges (<= cutoff) that are not local."""
  valid = pair_mask(atom_mask)
  dist = distances(pos, valid)
  local = valid & (edge_type > 0)
  return dist, local, valid & (dist <= cutoff) & ~local


class MLP(nn.Module):
  """Dense layers with relu between them (none after the last), GeoDiff's
  MultiLayerPerceptron."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for k, f in enumerate(self.features):
      x = nn.Dense(f)(x)
      if k < len(self.features) - 1:
        x = jax.nn.relu(x)
    return x


def materialized(x: jax.Array) -> jax.Array:
  """``x >= 0`` unchanged, computed once: max(x, 0) as a reduction, which XLA does not fuse
  into its consumers. XLA:CPU fuses an elementwise ``[n, A, A]`` producer (the cutoff's
  cosine) into every pair-sized consumer, recomputing it H times."""
  return jnp.max(jnp.stack([x, jnp.zeros_like(x)]), 0)


# ---------------------------------------------------------------------------------------
# The pair layers' parameters, returned, not applied: ops/graph_vjps.py's custom VJPs take
# them as arrays. They keep nn.Dense / nn.Embed's names, shapes, initialisers and random
# draws, so the parameters are those of the plain Flax layers.

class DenseParams(nn.Module):
  """``nn.Dense(features)``'s parameters for ``in_features`` inputs, returned, not applied."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features),
                        jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    return kernel, bias


class EmbedParams(nn.Module):
  """``nn.Embed(num_embeddings, features)``'s table, returned, not applied."""
  num_embeddings: int
  features: int

  @nn.compact
  def __call__(self):
    init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    return self.param("embedding", init, (self.num_embeddings, self.features), jnp.float32)


class MLPParams(nn.Module):
  """`MLP`'s parameters (``Dense_k`` inside), as (kernel, bias) pairs."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, in_features: int):
    dims = (in_features,) + tuple(self.features)
    return [DenseParams(f, name=f"Dense_{k}")(dims[k]) for k, f in enumerate(self.features)]


class EdgeEncoder(nn.Module):
  """``[n, A, A]`` distances and edge types -> ``[n, A, A, H]``: MLP(d) * Embed(type)."""
  hidden: int

  @nn.compact
  def __call__(self, dist, edge_type):
    mlp = MLPParams((self.hidden, self.hidden), name="MLP_0")(1)
    table = EmbedParams(NUM_EDGE_TYPES, self.hidden, name="Embed_0")()
    return edge_features(mlp, table, dist, edge_type)


class SchNet(nn.Module):
  """SchNet's interaction blocks on the global graph; returns node features ``[n, A, H]``."""
  hidden: int
  num_convs: int
  cutoff: float
  smooth: bool = True

  @nn.compact
  def __call__(self, atom_type, dist, edge_attr, graph):
    H = self.hidden
    h = nn.Embed(NUM_ELEMENTS, H, name="Embed_0")(atom_type)
    inside = dist <= self.cutoff
    c = 0.5 * (jnp.cos(dist * math.pi / self.cutoff) + 1.0) if self.smooth else 1.0
    c = materialized(jnp.where(graph & inside, c, 0.0))
    for k in range(self.num_convs):
      # The numbering of nn.Dense(H)(ssp(nn.Dense(H)(e))): Python builds the outer first.
      filt2 = DenseParams(H, name=f"Dense_{5 * k}")(H)
      filt1 = DenseParams(H, name=f"Dense_{5 * k + 1}")(H)
      x = nn.Dense(H, use_bias=False, name=f"Dense_{5 * k + 2}")(h)
      x = nn.Dense(H, name=f"Dense_{5 * k + 3}")(cfconv(filt1, filt2, edge_attr, c, x))
      h = h + nn.Dense(H, name=f"Dense_{5 * k + 4}")(shifted_softplus(x))
    return h


class GIN(nn.Module):
  """GINE layers (message relu(h_j + e_ij), summed) with shortcuts, on the local graph."""
  hidden: int
  num_convs: int

  @nn.compact
  def __call__(self, atom_type, edge_attr, local):
    h = nn.Embed(NUM_ELEMENTS, self.hidden)(atom_type)
    for k in range(self.num_convs):
      out = MLP((self.hidden, self.hidden))(gin_messages(h, edge_attr, local) + h)
      if k < self.num_convs - 1:
        out = jax.nn.relu(out)
      h = out + h
    return h


class PairHead(nn.Module):
  """A pair head's parameters, for `pair_heads`: [h_i * h_j, e_ij] -> one scalar per pair."""
  hidden: int

  @nn.compact
  def __call__(self):
    H = self.hidden
    return (DenseParams(H, name="Dense_0")(H), DenseParams(H, use_bias=False, name="Dense_1")(H),
            MLPParams((H // 2, 1), name="MLP_0")(H))


class DualEncoder(nn.Module):
  """GeoDiff's dual encoder. ``__call__`` returns pair scores and the edge sets.

  Args (call): ``pos [n, A, 3]``, ``atom_type [n, A]`` int, ``edge_type [n, A, A]`` int,
  ``atom_mask [n, A]``.
  Returns: dict with ``local`` and ``global`` pair scores ``[n, A, A]``, ``dist``,
  ``local_edges`` and ``global_edges`` (radius edges that are not local) ``[n, A, A]``.
  """
  hidden: int = 128
  num_convs: int = 6
  num_convs_local: int = 4
  cutoff: float = 10.0
  smooth: bool = True

  @nn.compact
  def __call__(self, pos, atom_type, edge_type, atom_mask):
    chex.assert_rank(pos, 3)
    dist, local, radius_only = edge_sets(pos, edge_type, atom_mask, self.cutoff)
    edge_attr = EdgeEncoder(self.hidden)(dist, edge_type)
    h_global = SchNet(self.hidden, self.num_convs, self.cutoff, self.smooth)(
        atom_type, dist, edge_attr, radius_only | local)
    h_local = GIN(self.hidden, self.num_convs_local)(atom_type, edge_attr, local)
    heads = (PairHead(self.hidden)(), PairHead(self.hidden)())  # PairHead_0: global
    s_global, s_local = pair_heads(heads, (h_global, h_local), edge_attr)
    return {"global": s_global, "local": s_local,
            "dist": dist, "local_edges": local, "global_edges": radius_only}

  def vectors(self, pos, atom_type, edge_type, atom_mask):
    """Per-atom (local, global) vectors ``[n, A, 3]`` each: the equivariant outputs."""
    out = self(pos, atom_type, edge_type, atom_mask)
    return (eq_transform(out["local"], pos, out["dist"], out["local_edges"]),
            eq_transform(out["global"], pos, out["dist"], out["global_edges"]))
