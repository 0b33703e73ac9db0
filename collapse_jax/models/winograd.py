"""3x3 stride-1 'SAME' convolution by Winograd's minimal filtering, F(4x4, 3x3).

Why: on CPU a conv step is bound by arithmetic and memory traffic, not by op count. F(4x4,
3x3) computes each 4x4 output tile from a 6x6 input tile with 36 channel matmuls instead of
144, i.e. 4x fewer multiply-adds than direct or im2col convolution, and its transformed
input is 2.25x the input where im2col's row patches are 3x (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016; the transforms below are theirs). In fp32 the
result differs from direct convolution by ~1e-5 relative (tests/test_layers_unet.py).

The VJP is written by hand. Autodiff of the forward would transpose its strided tile slices
into interior pads that XLA:CPU splits into ~100 small fusions (measured: a 3x3 64->32 conv
step at batch 128, 28x28 took 169 ms that way, 79 ms with this VJP). Instead the input
gradient is itself a 3x3 'SAME' conv, of dy with the flipped, transposed kernel, so it reuses
the forward; the kernel gradient contracts the saved transformed input with the transformed
output gradient.

Layouts: images NHWC, kernels HWIO; transformed tensors are [36, tiles, channels] with
tiles = batch * ceil(h / 4) * ceil(w / 4), so the 36 products are one batched matmul.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Input (B^T, 6x6), kernel (G, 6x3) and output (A^T, 4x6) transforms of F(4, 3), points
# 0, +-1, +-2, infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float32)
_AT_KRON = np.kron(_AT, _AT)  # [16, 36]: (row, col) of the output tile x (k, l) of M


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
  """[sum_i matrix[k, i] * parts[i] for each row k], zero terms left out.

  Written as elementwise sums (not a dot with the constant matrix) so that XLA fuses each
  stage of the input transform into one pass over memory.
  """
  out = []
  for row in matrix:
    terms = [p if c == 1 else float(c) * p for c, p in zip(row, parts) if c != 0]
    out.append(sum(terms[1:], terms[0]))
  return out


def _tile_offsets(x: jax.Array, axis: int, tiles: int) -> list[jax.Array]:
  """The 6 positions of overlapping 6-wide tiles (stride 4) along `axis`: 6 arrays with
  `tiles` entries on that axis."""
  return [lax.slice_in_dim(x, i, i + 4 * (tiles - 1) + 1, 4, axis) for i in range(6)]


def _num_tiles(height: int, width: int) -> tuple[int, int]:
  return -(-height // 4), -(-width // 4)


def _input_transform(x: jax.Array) -> jax.Array:
  """B^T d B of every 6x6 tile: [b, h, w, c] -> [36, b * th * tw, c]."""
  b, h, w, c = x.shape
  th, tw = _num_tiles(h, w)
  xp = jnp.pad(x, ((0, 0), (1, 4 * th + 1 - h), (1, 4 * tw + 1 - w), (0, 0)))
  rows = jnp.stack(_combine(_BT, _tile_offsets(xp, 1, th)))              # [6, b, th, w', c]
  tiles = jnp.stack(_combine(_BT, _tile_offsets(rows, 3, tw)), axis=1)   # [6, 6, b, th, tw, c]
  return tiles.reshape(36, b * th * tw, c)


def _output_transform(m: jax.Array, height: int, width: int) -> jax.Array:
  """A^T M A of every tile, tiles laid back out: [36, b * th * tw, o] -> [b, h, w, o].

  One matmul with the 16x36 matrix A^T (x) A^T: as a dot, XLA writes the result once.
  Written elementwise it was fused into (and recomputed by) each consumer, e.g. into
  transposing copies for later weight gradients (~60 ms per UNet step for one of them).
  """
  th, tw = _num_tiles(height, width)
  out_channels = m.shape[-1]
  y = jnp.dot(_AT_KRON, m.reshape(36, -1))                    # [(4 row, 4 col), b*th*tw*o]
  y = y.reshape(4, 4, -1, th, tw, out_channels).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(-1, 4 * th, 4 * tw, out_channels)[:, :height, :width]


def _kernel_transform(kernel: jax.Array) -> jax.Array:
  """G g G^T: [3, 3, c, o] -> [36, c, o]."""
  c, o = kernel.shape[2:]
  return jnp.einsum("ki,lj,ijco->klco", _G, _G, kernel).reshape(36, c, o)


def _forward(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(conv output [b, h, w, o], transformed input [36, tiles, c])."""
  v = _input_transform(x)
  m = jnp.einsum("ntc,nco->nto", v, _kernel_transform(kernel))
  return _output_transform(m, *x.shape[1:3]), v


@jax.custom_vjp
def conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 3x3 stride-1 convolution, equal to `layers.conv_xla(x, kernel, 1)` up to fp32
  rounding.

  Args:
    x: [batch, height, width, in_channels].
    kernel: [3, 3, in_channels, out_channels].

  Returns:
    [batch, height, width, out_channels].
  """
  return _forward(x, kernel)[0]


def _vjp_forward(x, kernel):
  y, v = _forward(x, kernel)
  return y, (v, kernel, x.shape)


def _vjp_backward(residuals, dy):
  v, kernel, (_, height, width, _) = residuals
  dx = _forward(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))[0]
  # dL/dM is the transposed output transform of dy. It is built channel-major, [36, o,
  # tiles], so that the kernel gradient's contraction over tiles is a plain matmul (XLA:CPU
  # runs the [36, tiles, c]^T x [36, tiles, o] form ~2x slower).
  th, tw = _num_tiles(height, width)
  out_channels = dy.shape[-1]
  dy = jnp.pad(dy, ((0, 0), (0, 4 * th - height), (0, 4 * tw - width), (0, 0)))
  dy = dy.reshape(-1, th, 4, tw, 4, out_channels).transpose(2, 4, 5, 0, 1, 3)
  dm_t = jnp.dot(_AT_KRON.T, dy.reshape(16, -1)).reshape(36, out_channels, -1)
  du_t = jnp.einsum("not,ntc->noc", dm_t, v)                  # [36, o, c]
  dkernel = jnp.einsum("ki,lj,kloc->ijco", _G, _G, du_t.reshape(6, 6, *du_t.shape[1:]))
  return dx, dkernel


conv3x3_winograd.defvjp(_vjp_forward, _vjp_backward)
