"""Products with a weight matrix whose weight gradient is written input-first.

``matmul(x [..., d_in], kernel [d_in, d_out]) -> [..., d_out]`` (nn.Dense's product) and
``attend(x [..., d], table [v, d]) -> [..., v]`` (a tied output layer: nn.Embed.attend).

Why: autodiff transposes these products into a weight gradient computed cotangent-first,
``dot(dy, x)`` over the leading axes, then transposed into the weight's layout. XLA:CPU
does not hand that form to its fast matrix kernels (YNNPACK), and the transposed copy of a
``[vocab, tokens]`` product is a large write of its own: together the larger part of a small
transformer's backward pass. Here the weight gradient is the plain product of the flattened
input, transposed, with the flattened cotangent (``x^T dy``), which takes the fast kernels;
the forward products and the input gradients are autodiff's. Values are equal up to float
rounding (tests/test_transformer.py checks the gradients against autodiff's).
"""
from __future__ import annotations

import jax


def flat(x: jax.Array) -> jax.Array:
  """``[..., n]`` -> ``[N, n]``: every leading axis in one."""
  return x.reshape(-1, x.shape[-1])


def x_transposed_dy(x: jax.Array, dy: jax.Array) -> jax.Array:
  """``x^T dy`` of the flattened ``x [..., a]`` and ``dy [..., b]``: ``[a, b]``."""
  return jax.lax.dot_general(flat(x), flat(dy), (((0,), (0,)), ((), ())))


def inputs_saved(f):
  """The forward pass for ``f.defvjp`` that keeps ``f``'s arguments as the residuals."""
  return lambda *args: (f(*args), args)


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_bwd(res, dy):
  x, kernel = res
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  return dx, x_transposed_dy(x, dy)


matmul.defvjp(inputs_saved(matmul), _matmul_bwd)


def attend(x: jax.Array, table: jax.Array) -> jax.Array:
  """``x [..., d]`` against ``table [v, d]`` -> ``[..., v]``: `matmul` with the table
  transposed, so its gradient is `matmul`'s, transposed back."""
  return matmul(x, table.T)
