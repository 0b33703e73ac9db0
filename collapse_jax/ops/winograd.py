"""Convolutions by Winograd's minimal filtering: 3x3 'SAME' convs, F(4x4, 3x3), and nearest
x2 upsampling followed by a 3x3 conv, computed on the low-resolution input, F(m x m, 2x2).

Why: on CPU a conv step is bound by arithmetic and memory traffic, not by op count. F(4x4,
3x3) computes each 4x4 output tile from a 6x6 input tile with 36 channel matmuls instead of
144, i.e. 4x fewer multiply-adds than direct or im2col convolution, and its transformed
input is 2.25x the input where im2col's row patches are 3x (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016). In fp32 the result differs from direct
convolution by ~1e-5 relative (tests/test_layers_unet.py).

Upsample + conv: each output parity (row parity a, column parity b) of a 3x3 conv over a
nearest-upsampled image is a 2x2 conv of the low-resolution image whose taps are sums of the
3x3 taps. So the four parities are one 2x2 conv with 4x the output channels, run by
Winograd on the low-resolution input: the upsampled image (4x the input) is never written,
and the input transform reads a quarter of the data (benchmarks/conv_vs_torch.py).

The VJPs are written by hand. Autodiff of the forward would transpose its strided tile
slices into interior pads that XLA:CPU splits into ~100 small fusions. Instead each input
gradient is itself a Winograd correlation of the output gradient with the flipped,
transposed kernel; the kernel gradient contracts the saved transformed input with the
transformed output gradient.

Layouts: images NHWC, kernels HWIO; transformed tensors are [alpha^2, tiles, channels] with
alpha = m + r - 1 and tiles = batch * ceil(out_h / m) * ceil(out_w / m), so the alpha^2
products are one batched matmul.
"""

import functools
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Interpolation points of the Toom-Cook construction, in order of use (infinity is added).
_POINTS = (0, 1, -1, 2, -2)


class _Transforms(NamedTuple):
  """F(m, r) in one dimension: y = AT [(G g) * (BT d)] is the valid correlation of a tile d
  (alpha = m + r - 1 values) with a kernel g (r values); y has m values."""
  m: int
  bt: np.ndarray       # [alpha, alpha]
  g: np.ndarray        # [alpha, r]
  at: np.ndarray       # [m, alpha]
  at_kron: np.ndarray  # [m * m, alpha * alpha]: kron(AT, AT), the 2D output transform


@functools.cache
def _transforms(m: int, r: int) -> _Transforms:
  """Toom-Cook F(m, r) at the points 0, 1, -1, 2, ... and infinity; for F(4, 3) these are
  Lavin & Gray's matrices.

  AT evaluates at the points and G interpolates (scaled by 1 / prod(p_j - p_l)); BT is then
  the unique solution of the bilinear identity sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k],
  solved here and rounded to the small fractions it is made of.
  """
  alpha = m + r - 1
  if alpha - 1 > len(_POINTS):
    raise ValueError(f"F({m}, {r}) needs more than {len(_POINTS)} finite points")
  p = np.array(_POINTS[:alpha - 1], np.float64)
  at = np.zeros((m, alpha))
  at[:, :-1] = p[None, :] ** np.arange(m)[:, None]
  at[-1, -1] = 1
  scale = np.array([np.prod([pj - pl for pl in p if pl != pj]) for pj in p])
  g = np.zeros((alpha, r))
  g[:-1] = p[:, None] ** np.arange(r)[None, :] / scale[:, None]
  g[-1, -1] = 1
  coefficients = np.einsum("ij,jk->ikj", at, g).reshape(m * r, alpha)
  targets = np.array([[float(l == i + k) for l in range(alpha)]
                      for i in range(m) for k in range(r)])
  bt = np.linalg.lstsq(coefficients, targets, rcond=None)[0]
  bt = np.vectorize(lambda v: float(Fraction(v).limit_denominator(64)))(bt)
  if not np.allclose(coefficients @ bt, targets, rtol=0, atol=1e-12):
    raise ArithmeticError(f"no exact F({m}, {r}) at the points {p.tolist()}")
  return _Transforms(m, *(a.astype(np.float32) for a in (bt, g, at, np.kron(at, at))))


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
  """[sum_i matrix[k, i] * parts[i] for each row k], zero terms left out.

  Written as elementwise sums (not a dot with the constant matrix) so that XLA fuses each
  stage of the input transform into one pass over memory.
  """
  rows = ([p if c == 1 else float(c) * p for c, p in zip(row, parts) if c != 0] for row in matrix)
  return [sum(terms[1:], terms[0]) for terms in rows]


def _num_tiles(size: int, m: int) -> int:
  return -(-size // m)


def _input_transform(x: jax.Array, tf: _Transforms, th: int, tw: int) -> jax.Array:
  """B^T d B of th x tw overlapping alpha x alpha tiles (stride m) from the top left,
  zero-padded at the end as needed: [b, h, w, c] -> [alpha^2, b * th * tw, c]."""
  b, h, w, c = x.shape
  m, alpha = tf.m, tf.bt.shape[0]
  x = jnp.pad(x, ((0, 0), (0, max(m * (th - 1) + alpha - h, 0)),
                  (0, max(m * (tw - 1) + alpha - w, 0)), (0, 0)))

  def offsets(a, axis, tiles):  # the alpha positions within the tiles along `axis`
    return [lax.slice_in_dim(a, i, i + m * (tiles - 1) + 1, m, axis) for i in range(alpha)]

  rows = jnp.stack(_combine(tf.bt, offsets(x, 1, th)))                # [alpha, b, th, w', c]
  tiles = jnp.stack(_combine(tf.bt, offsets(rows, 3, tw)), axis=1)    # [alpha, alpha, b, th, tw, c]
  return tiles.reshape(alpha * alpha, b * th * tw, c)


def _output_transform(mm: jax.Array, tf: _Transforms, th: int, tw: int) -> jax.Array:
  """A^T M A of every tile, tiles laid back out: [alpha^2, b * th * tw, o] -> [b, m th, m tw, o].

  One matmul with kron(A^T, A^T): as a dot, XLA writes the result once. Written
  elementwise it would be fused into (and recomputed by) each consumer, e.g. into
  transposing copies for later weight gradients.
  """
  m, o = tf.m, mm.shape[-1]
  y = jnp.dot(tf.at_kron, mm.reshape(mm.shape[0], -1))         # [(m row, m col), b*th*tw*o]
  y = y.reshape(m, m, -1, th, tw, o).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(-1, m * th, m * tw, o)


def _kernel_transform(kernel: jax.Array, tf: _Transforms) -> jax.Array:
  """G g G^T: [r, r, c, o] -> [alpha^2, c, o]."""
  c, o = kernel.shape[2:]
  return jnp.einsum("ki,lj,ijco->klco", tf.g, tf.g, kernel).reshape(-1, c, o)


def _correlate(x: jax.Array, kernel: jax.Array, m: int, out_h: int,
               out_w: int) -> tuple[jax.Array, jax.Array]:
  """Valid correlation of x with an r x r kernel, the first out_h x out_w outputs, by F(m, r).

  Args:
    x: [b, h, w, c]; positions past its end count as zeros.
    kernel: [r, r, c, o].

  Returns:
    (y [b, out_h, out_w, o] with y[i, j] = sum_uv x[i + u, j + v] @ kernel[u, v],
     the transformed input [alpha^2, tiles, c] for the kernel gradient).
  """
  tf = _transforms(m, kernel.shape[0])
  th, tw = _num_tiles(out_h, m), _num_tiles(out_w, m)
  v = _input_transform(x, tf, th, tw)
  mm = jnp.einsum("ntc,nco->nto", v, _kernel_transform(kernel, tf))
  return _output_transform(mm, tf, th, tw)[:, :out_h, :out_w], v


def _kernel_grad(v: jax.Array, dy: jax.Array, m: int, r: int) -> jax.Array:
  """dL/dkernel of `_correlate` from its transformed input v and dy [b, out_h, out_w, o].

  dL/dM is the transposed output transform of dy. It is built channel-major, [alpha^2, o,
  tiles], so that the contraction over tiles is a plain matmul (XLA:CPU runs the
  [alpha^2, tiles, c]^T x [alpha^2, tiles, o] form ~2x slower).
  """
  tf = _transforms(m, r)
  b, h, w, o = dy.shape
  th, tw = _num_tiles(h, m), _num_tiles(w, m)
  dy = jnp.pad(dy, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
  dy = dy.reshape(b, th, m, tw, m, o).transpose(2, 4, 5, 0, 1, 3)
  dm_t = jnp.dot(tf.at_kron.T, dy.reshape(m * m, -1)).reshape(-1, o, b * th * tw)
  du_t = jnp.einsum("not,ntc->noc", dm_t, v)                  # [alpha^2, o, c]
  alpha = tf.bt.shape[0]
  return jnp.einsum("ki,lj,kloc->ijco", tf.g, tf.g, du_t.reshape(alpha, alpha, o, -1))


def _flip_transpose(kernel: jax.Array) -> jax.Array:
  """The kernel of the input gradient's correlation: [r, r, c, o] -> [r, r, o, c]."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


# ---------------------------------------------------------------------------------------
# 3x3 'SAME' convolution, F(4x4, 3x3).


def _conv3x3_forward(x, kernel):
  """(conv output [b, h, w, o], residuals)."""
  h, w = x.shape[1:3]
  y, v = _correlate(jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))), kernel, 4, h, w)
  return y, (v, kernel)


@jax.custom_vjp
def conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 stride-1 convolution of x [batch, height, width, in_channels] with kernel
  [3, 3, in_channels, out_channels] -> [batch, height, width, out_channels], equal to
  `layers.conv_xla(x, kernel, 1)` up to fp32 rounding."""
  return _conv3x3_forward(x, kernel)[0]


def _conv3x3_vjp_backward(residuals, dy):
  v, kernel = residuals
  dx = _conv3x3_forward(dy, _flip_transpose(kernel))[0]
  return dx, _kernel_grad(v, dy, 4, 3)


conv3x3_winograd.defvjp(_conv3x3_forward, _conv3x3_vjp_backward)


# ---------------------------------------------------------------------------------------
# Nearest x2 upsampling + 3x3 'SAME' convolution, F(m x m, 2x2) on the low-res input.

# _TAPS[p, u, i] = 1 where tap i of the 3x3 kernel (on the upsampled image) reads window row
# u of the 2x2 kernel (on the low-res image padded by 1) for output rows of parity a; p = 1 - a
# (parity 1 first: see `_upsample_conv_forward`). Output row 2k (a = 0) reads upsampled rows
# 2k-1, 2k, 2k+1 = low-res rows k-1, k, k; row 2k+1 reads k, k, k+1. The window of parity a
# starts at padded row k + a.
_TAPS = np.array([[[1, 1, 0], [0, 0, 1]],    # a = 1
                  [[1, 0, 0], [0, 1, 1]]],   # a = 0
                 np.float32)


def _parity_kernel(kernel: jax.Array) -> jax.Array:
  """The 3x3 kernel as one 2x2 kernel per output parity: [3, 3, c, o] -> [2, 2, c, 4 o],
  output channels ordered (row parity, column parity, o) as in `_TAPS`."""
  c, o = kernel.shape[2:]
  return jnp.einsum("pui,qvj,ijco->uvcpqo", _TAPS, _TAPS, kernel).reshape(2, 2, c, 4 * o)


def _best_tile(size: int) -> int:
  """The output tile m of F(m, 2) (m + 1 values per tile) covering `size` outputs with the
  fewest transformed values, ties to the larger tile."""
  return min((5, 4, 3), key=lambda m: _num_tiles(size, m) * (m + 1))


def _upsample_conv_forward(x, kernel):
  """(output [b, 2h, 2w, o], residuals).

  With xp = x padded by 1, parity (a, b) of the output at (2k + a, 2l + b) is the 2x2
  correlation y_ab of xp at (k + a, l + b), for k, l in [0, h + 1) overall. Ordering the
  parities 1, 0 makes y [b, h+1, w+1, (2, 2, o)] lay out as the output padded by 1 on
  every side: output row 2k - 1 is (k, parity 1), row 2k is (k, parity 0).
  """
  b, h, w, _ = x.shape
  o = kernel.shape[-1]
  m = _best_tile(max(h, w) + 1)
  pk = _parity_kernel(kernel)
  y, v = _correlate(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), pk, m, h + 1, w + 1)
  y = y.reshape(b, h + 1, w + 1, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, 2 * h + 2, 2 * w + 2, o)[:, 1:2 * h + 1, 1:2 * w + 1]
  return y, (v, pk, m, x.shape)


@jax.custom_vjp
def upsample_conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling followed by a 'SAME' 3x3 stride-1 convolution:
  x [batch, height, width, in_channels], kernel [3, 3, in_channels, out_channels] ->
  [batch, 2 height, 2 width, out_channels], equal to
  `layers.conv_xla(layers.upsample_nearest(x), kernel, 1)` up to fp32 rounding."""
  return _upsample_conv_forward(x, kernel)[0]


def _upsample_conv_vjp_backward(residuals, dy):
  v, pk, m, (b, h, w, _) = residuals
  o = dy.shape[-1]
  # dL/dy_ab laid out as in the forward: pad by 1, split rows and columns into parities.
  dy = jnp.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b, h + 1, 2, w + 1, 2, o)
  dy = dy.transpose(0, 1, 3, 2, 4, 5).reshape(b, h + 1, w + 1, 4 * o)
  # x[k] enters y[k - 1] through window row 1 and y[k] through row 0 (xp[k + 1] = x[k]).
  dx = _correlate(dy, _flip_transpose(pk), _best_tile(max(h, w)), h, w)[0]
  dpk = _kernel_grad(v, dy, m, 2).reshape(2, 2, -1, 2, 2, o)
  return dx, jnp.einsum("pui,qvj,uvcpqo->ijco", _TAPS, _TAPS, dpk)


upsample_conv3x3_winograd.defvjp(_upsample_conv_forward, _upsample_conv_vjp_backward)
