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

Speed on XLA:CPU (see "Pair layers" below): the pair layers are custom VJPs that keep
only a few pair tensors for the backward pass and recompute the rest; the values are
those of the plain Flax layers (parameters identical, outputs equal up to float rounding).
"""
from __future__ import annotations

import math
from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.data.conformers import NUM_EDGE_TYPES

NUM_ELEMENTS = 100  # atomic-number embedding rows, as GeoDiff


@jax.custom_jvp
def shifted_softplus(x: jax.Array) -> jax.Array:
  """softplus(x) - log 2, softplus as max(x, 0) + log1p(exp(-|x|)): jax.nn.softplus's
  formula and bits without its NaN select (NaN propagates anyway), which XLA:CPU fuses
  worse (sampling ~20% slower with it); the derivative is sigmoid(x), as jax.nn.softplus's."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x))) - math.log(2.0)


@shifted_softplus.defjvp
def _shifted_softplus_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return shifted_softplus(x), t * jax.nn.sigmoid(x)


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
  """Dense layers with ``act`` between them (none after the last), GeoDiff's
  MultiLayerPerceptron."""
  features: Sequence[int]
  act: str = "relu"

  @nn.compact
  def __call__(self, x):
    act = getattr(jax.nn, self.act)
    for k, f in enumerate(self.features):
      x = nn.Dense(f)(x)
      if k < len(self.features) - 1:
        x = act(x)
    return x


# ---------------------------------------------------------------------------------------
# Pair layers ([n, A, A, H] tensors). On XLA:CPU a training step's temporaries are mapped
# afresh on every call (one buffer, over glibc's 32 MiB mmap threshold at the :cpu size)
# and every 4 KiB page faults on first touch: with the ~28 pair tensors that autodiff kept
# for the backward pass (50 MiB at batch 16, A = 30, H = 32) a step spent as long in the
# kernel as in arithmetic. So each pair layer is a custom VJP that saves its inputs (and
# the SchNet filters' softplus, the one costly value) and recomputes the rest in its
# backward pass, with the weight and input gradients written out; the two heads' backward
# passes run one after the other. Peak temporaries: 24 MiB, no page faults after warm-up.
#
# `jax.checkpoint` does not do this on XLA:CPU: the optimization barriers that keep a
# recomputation apart are dropped before common-subexpression elimination, which merges it
# with the forward pass (every intermediate stays alive) and the scheduler is free to run
# it early. Here the recomputation reads its weights through `_after`, which makes them
# depend on the incoming cotangent. The weights keep nn.Dense / nn.Embed's names, shapes,
# initialisers and random draws (`DenseParams`, `EmbedParams`, `MLPParams`).

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


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


def pair_dense(x: jax.Array, weights) -> jax.Array:
  """nn.Dense with ``weights = (kernel, bias or None)``."""
  kernel, bias = weights
  y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  return y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def _dense_grads(x, dy, kernel, bias=True):
  """((kernel, bias) cotangents, input cotangent) of `pair_dense` at input ``x`` for output
  cotangent ``dy``."""
  dk = jax.lax.dot_general(_flat(x), _flat(dy), (((0,), (0,)), ((), ())))
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  return (dk, jnp.sum(_flat(dy), 0) if bias else None), dx


def _relu_grad(dy, y):
  """The cotangent of x for y = relu(x) (0 where x <= 0, as jax.nn.relu)."""
  return jnp.where(y > 0, dy, 0.0)


def _after(ct, tree):
  """``tree``'s float arrays plus 0 * (the first entry of cotangent ``ct``): the same values,
  which XLA can neither share with the forward pass nor use before the cotangent exists (a
  float product with 0 is not folded: it is NaN for NaN). For weights and node features;
  biases included, else XLA keeps their broadcasts to pair shape alive across the step."""
  zero = 0.0 * jax.tree.leaves(ct)[0].reshape(-1)[0]
  return jax.tree.map(lambda a: a + zero.astype(a.dtype)
                      if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def materialized(x: jax.Array) -> jax.Array:
  """``x >= 0`` unchanged, computed once: max(x, 0) as a reduction, which XLA does not fuse
  into its consumers. XLA:CPU fuses an elementwise ``[n, A, A]`` producer (the cutoff's
  cosine) into every pair-sized consumer, recomputing it H times (~4% of a training step)."""
  return jnp.max(jnp.stack([x, jnp.zeros_like(x)]), 0)


# Edge features: e_ij = MLP(d_ij) * Embed(type_ij).

def _edge_parts(mlp, table, dist, edge_type):
  (k0, b0), second = mlp
  # The first layer has one input: its dot is the product d * k0, exactly.
  a = jax.nn.relu(dist[..., None] * k0[0] + b0)
  d_emb = pair_dense(a, second)
  emb = jnp.take(table, edge_type.astype(jnp.int32), axis=0)
  return a, d_emb, emb


@jax.custom_vjp
def edge_features(mlp, table, dist, edge_type):
  """``[n, A, A, H]``: MLP(d) * Embed(type) of ``dist`` and ``edge_type [n, A, A]``;
  ``mlp = [(k0 [1, H], b0), (k1, b1)]``, ``table [NUM_EDGE_TYPES, H]``."""
  _, d_emb, emb = _edge_parts(mlp, table, dist, edge_type)
  return d_emb * emb


def _edge_fwd(mlp, table, dist, edge_type):
  return edge_features(mlp, table, dist, edge_type), (mlp, table, dist, edge_type)


def _edge_bwd(res, ct):
  mlp, table, dist, edge_type = _after(ct, res)
  (k0, _), (k1, _) = mlp
  a, d_emb, emb = _edge_parts(mlp, table, dist, edge_type)
  one_hot = jax.nn.one_hot(edge_type.astype(jnp.int32), table.shape[0])
  d_table = jax.lax.dot_general(_flat(one_hot), _flat(ct * d_emb), (((0,), (0,)), ((), ())))
  d_second, g_a = _dense_grads(a, ct * emb, k1)
  g_a = _relu_grad(g_a, a)
  d_first = (jnp.sum(_flat(g_a * dist[..., None]), 0)[None], jnp.sum(_flat(g_a), 0))
  return [d_first, d_second], d_table, jnp.sum(g_a * k0[0], -1), None


edge_features.defvjp(_edge_fwd, _edge_bwd)


# SchNet's continuous-filter convolution: out_i = sum_j w_ij * x_j, w = filter(e_ij) c_ij.

@jax.custom_vjp
def cfconv(filt1, filt2, edge_attr, c, x):
  """``[n, A, H]``: sum_j w_ij * x_j with ``w = Dense(ssp(Dense(edge_attr))) * c``; cutoff
  weights ``c [n, A, A]``, node features ``x [n, A, H]``."""
  return _cfconv_fwd(filt1, filt2, edge_attr, c, x)[0]


def _cfconv_fwd(filt1, filt2, edge_attr, c, x):
  s = shifted_softplus(pair_dense(edge_attr, filt1))
  w = pair_dense(s, filt2) * c[..., None]
  # A fused multiply-reduce, not an einsum: XLA:CPU lowers the einsum (a dot with batch
  # dims n and h) to transposes and small matmuls, ~1.8x slower.
  return jnp.sum(w * x[..., None, :, :], axis=-2), (filt1, filt2, edge_attr, c, x, s)


def _cfconv_bwd(res, ct):
  filt1, filt2, edge_attr, c, x, s = res
  filt1, filt2 = _after(ct, (filt1, filt2))
  f1 = pair_dense(edge_attr, filt1)
  f2 = pair_dense(s, filt2)
  d_x = jnp.sum(f2 * c[..., None] * ct[..., :, None, :], axis=-3)
  d_w = ct[..., :, None, :] * x[..., None, :, :]
  d_c = jnp.sum(d_w * f2, -1)
  d_filt2, d_s = _dense_grads(s, d_w * c[..., None], filt2[0])
  d_filt1, d_e = _dense_grads(edge_attr, d_s * jax.nn.sigmoid(f1), filt1[0])
  return d_filt1, d_filt2, d_e, d_c, d_x


cfconv.defvjp(_cfconv_fwd, _cfconv_bwd)


# GINE's summed messages: out_i = sum_j relu(h_j + e_ij) over local edges.

@jax.custom_vjp
def gin_messages(h, edge_attr, local):
  """``[n, A, H]``: sum_j relu(h_j + e_ij) * local_ij; ``h [n, A, H]``, ``local [n, A, A]``
  bool."""
  return jnp.sum(jax.nn.relu(h[..., None, :, :] + edge_attr) * local[..., None], axis=-2)


def _gin_fwd(h, edge_attr, local):
  return gin_messages(h, edge_attr, local), (h, edge_attr, local)


def _gin_bwd(res, ct):
  h, edge_attr, local = res
  pre = _after(ct, h)[..., None, :, :] + edge_attr
  d_pre = jnp.where((pre > 0) & local[..., None], ct[..., :, None, :], 0.0)
  return jnp.sum(d_pre, -3), d_pre, None


gin_messages.defvjp(_gin_fwd, _gin_bwd)


# The pair heads: [h_i * h_j, e_ij] -> MLP (H, H/2, 1) -> one scalar per pair.

def _head_parts(weights, h, edge_attr):
  first, edge, (hidden, last) = weights
  prod = h[..., :, None, :] * h[..., None, :, :]
  # The first layer on the concatenation, as two matmuls (no [n, A, A, 2H] copy).
  r = jax.nn.relu(pair_dense(prod, first) + pair_dense(edge_attr, edge))
  q = jax.nn.relu(pair_dense(r, hidden))
  return prod, r, q, pair_dense(q, last)[..., 0]


def _head_bwd(weights, h, edge_attr, ct):
  first, edge, (hidden, last) = weights
  prod, r, q, _ = _head_parts(weights, h, edge_attr)
  d_last, d_q = _dense_grads(q, ct[..., None], last[0])
  d_hidden, d_r = _dense_grads(r, _relu_grad(d_q, q), hidden[0])
  d_x = _relu_grad(d_r, r)
  d_first, d_prod = _dense_grads(prod, d_x, first[0])
  d_edge, d_e = _dense_grads(edge_attr, d_x, edge[0], bias=False)
  d_h = jnp.sum(d_prod * h[..., None, :, :], -2) + jnp.sum(d_prod * h[..., :, None, :], -3)
  return (d_first, d_edge, [d_hidden, d_last]), d_h, d_e


@jax.custom_vjp
def pair_heads(weights, hs, edge_attr):
  """Pair scores ``[n, A, A]``, one per head: ``weights[k] = (first, edge, [hidden, last])``
  on node features ``hs[k] [n, A, H]`` and ``edge_attr``. The backward pass runs the heads
  one after the other, the last first (so SchNet's backward pass, fed by the first, does
  not overlap them either)."""
  return tuple(_head_parts(w, h, edge_attr)[-1] for w, h in zip(weights, hs))


def _heads_fwd(weights, hs, edge_attr):
  return pair_heads(weights, hs, edge_attr), (weights, hs, edge_attr)


def _heads_bwd(res, ct):
  weights, hs, edge_attr = res
  d_weights, d_hs, d_e, after = [], [], 0.0, ct
  for w, h, c in reversed(list(zip(weights, hs, ct))):
    d_w, d_h, d_e_k = _head_bwd(*_after(after, (w, h)), edge_attr, c)
    d_weights.append(d_w)
    d_hs.append(d_h)
    d_e = d_e + d_e_k
    after = d_h
  return tuple(d_weights[::-1]), tuple(d_hs[::-1]), d_e


pair_heads.defvjp(_heads_fwd, _heads_bwd)


# ---------------------------------------------------------------------------------------
# Modules: parameters and the node-level layers.

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
