"""Custom VJPs of the dual encoder's pair layers (nets/dual_encoder.py) on dense padded
molecules: edge features, SchNet's continuous-filter convolution, GINE's summed messages and
the two pair heads, all over pair tensors ``[n, A, A, H]`` (``n`` molecules of ``A`` padded
atoms, ``H`` features), beside shifted softplus with a hand-written derivative.

Why: XLA:CPU's autodiff of these gather/scatter graph ops is slow. A training step's
temporaries are mapped afresh on every call (one buffer, over glibc's 32 MiB mmap threshold
at the :cpu size) and every 4 KiB page faults on first touch: with the ~28 pair tensors that
autodiff keeps for the backward pass (50 MiB at batch 16, A = 30, H = 32) a step spends as
long in the kernel as in arithmetic. So each pair layer here is a custom VJP that saves its
inputs (and the SchNet filters' softplus, the one costly value) and recomputes the rest in
its backward pass, with the weight and input gradients written out; the two heads' backward
passes run one after the other. Peak temporaries: 24 MiB, no page faults after warm-up.

`jax.checkpoint` does not do this on XLA:CPU: the optimization barriers that keep a
recomputation apart are dropped before common-subexpression elimination, which merges it
with the forward pass (every intermediate stays alive) and the scheduler is free to run it
early. Here the recomputation reads its weights through `_after`, which makes them depend on
the incoming cotangent.

The values are those of the plain Flax layers (outputs equal up to float rounding;
tests/test_geodiff.py checks every cotangent against autodiff of the undecorated forward).
Weights are nn.Dense's ``(kernel [in, out], bias [out] or None)`` pairs and nn.Embed's
table, which nets/dual_encoder.py's parameter modules create without applying them.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from collapse_jax.ops.dense_vjps import flat, inputs_saved, x_transposed_dy


@jax.custom_jvp
def shifted_softplus(x: jax.Array) -> jax.Array:
  """softplus(x) - log 2, softplus as max(x, 0) + log1p(exp(-|x|)): jax.nn.softplus's
  formula and bits without its NaN select (NaN propagates anyway), which XLA:CPU fuses
  worse (sampling is slower with it); the derivative is sigmoid(x), as jax.nn.softplus's."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x))) - math.log(2.0)


@shifted_softplus.defjvp
def _shifted_softplus_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return shifted_softplus(x), t * jax.nn.sigmoid(x)


def pair_dense(x: jax.Array, weights) -> jax.Array:
  """nn.Dense with ``weights = (kernel, bias or None)``."""
  kernel, bias = weights
  y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  return y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def _dense_grads(x, dy, kernel, bias=True):
  """((kernel, bias) cotangents, input cotangent) of `pair_dense` at input ``x`` for output
  cotangent ``dy``."""
  dk = x_transposed_dy(x, dy)
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  return (dk, jnp.sum(flat(dy), 0) if bias else None), dx


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


def _edge_bwd(res, ct):
  mlp, table, dist, edge_type = _after(ct, res)
  (k0, _), (k1, _) = mlp
  a, d_emb, emb = _edge_parts(mlp, table, dist, edge_type)
  one_hot = jax.nn.one_hot(edge_type.astype(jnp.int32), table.shape[0])
  d_table = x_transposed_dy(one_hot, ct * d_emb)
  d_second, g_a = _dense_grads(a, ct * emb, k1)
  g_a = _relu_grad(g_a, a)
  d_first = (jnp.sum(flat(g_a * dist[..., None]), 0)[None], jnp.sum(flat(g_a), 0))
  return [d_first, d_second], d_table, jnp.sum(g_a * k0[0], -1), None


edge_features.defvjp(inputs_saved(edge_features), _edge_bwd)


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


def _gin_bwd(res, ct):
  h, edge_attr, local = res
  pre = _after(ct, h)[..., None, :, :] + edge_attr
  d_pre = jnp.where((pre > 0) & local[..., None], ct[..., :, None, :], 0.0)
  return jnp.sum(d_pre, -3), d_pre, None


gin_messages.defvjp(inputs_saved(gin_messages), _gin_bwd)


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


pair_heads.defvjp(inputs_saved(pair_heads), _heads_bwd)
