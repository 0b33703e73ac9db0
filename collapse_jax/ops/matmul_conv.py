"""'SAME' convolutions (kernel 1 or 3, stride 1 or 2, NHWC / HWIO) computed with matmuls.

Why: XLA:CPU runs convolution gradients inside a while loop as naive loops (layers.py), and
its matmuls are fast. Each formulation below gives the same maths as
`lax.conv_general_dilated` (tests/test_layers_unet.py checks values and both gradients).

Where a formulation's autodiff gradient ends in a sum of shifted or padded slices, the VJP
is written by hand: XLA:CPU fuses such elementwise sums into every consumer and recomputes
them there (e.g. inside transposing copies for later weight gradients). Gradients that end
in a matmul are written once.
"""

import jax
import jax.numpy as jnp
from jax import lax

from collapse_jax.ops.winograd import conv3x3_winograd

# Below this many input or output channels, Winograd's transforms cost more than the 4x
# fewer multiply-adds save (a 1->32 conv is 3x slower by Winograd than by im2col; a 64->32
# conv 1.5x faster).
WINOGRAD_MIN_CHANNELS = 32


def uses_winograd(kernel_shape) -> bool:
  """Whether a stride-1 conv with this [kh, kw, in, out] kernel runs by Winograd: 3x3, with
  both channel counts at least WINOGRAD_MIN_CHANNELS. Such a conv after a nearest x2
  upsampling runs as one op, `winograd.upsample_conv3x3_winograd` (see `layers.Conv`)."""
  kh, kw, in_channels, out_channels = kernel_shape
  return (kh, kw) == (3, 3) and min(in_channels, out_channels) >= WINOGRAD_MIN_CHANNELS


def conv_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'SAME' convolution built from matmuls: a drop-in for `layers.conv_xla` (same
  arguments, same [batch, ceil(h / stride), ceil(w / stride), out] result, same maths).

  1x1: one matmul. 3x3 stride 1: Winograd F(4x4, 3x3) (`winograd.py`) where
  `uses_winograd`, else patches and shifted outputs (`_conv3x3_shifted`). 3x3 stride 2:
  full patches.
  """
  kh, kw, _, out_channels = kernel.shape
  if (kh, kw) == (1, 1):
    return jnp.dot(x[:, ::stride, ::stride, :], kernel.reshape(-1, out_channels))
  if (kh, kw, stride) == (3, 3, 1):
    return (conv3x3_winograd if uses_winograd(kernel.shape) else _conv3x3_shifted)(x, kernel)
  return _conv3x3_stride2(x, kernel)


def _stride2_patches(x: jax.Array) -> jax.Array:
  """3x3 stride-2 'SAME' patches: [b, h, w, c] -> [b, ceil(h/2), ceil(w/2), 9c], taps in
  (kh, kw, c) order, matching `kernel.reshape(-1, out)`."""
  _, height, width, _ = x.shape
  (top, bottom), (left, right) = lax.padtype_to_pads((height, width), (3, 3), (2, 2), "SAME")
  out_h, out_w = -(-height // 2), -(-width // 2)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  return jnp.concatenate([xp[:, i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2]
                          for i in range(3) for j in range(3)], axis=-1)


@jax.custom_vjp
def _conv3x3_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 stride-2 'SAME' conv, patches + one matmul: [b, h, w, c] -> [b, h', w', out].

  Hand-written VJP (see the module docstring): autodiff of the patches would sum 9 padded
  slices for the input gradient; `_stride2_input_grad` uses one matmul per parity instead.
  """
  return _stride2_forward(x, kernel)[0]


def _stride2_forward(x, kernel):
  patches = _stride2_patches(x)
  return jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1])), (patches, kernel, x.shape)


def _stride2_backward(residuals, dy):
  patches, kernel, x_shape = residuals
  dkernel = jnp.dot(patches.reshape(-1, patches.shape[-1]).T, dy.reshape(-1, kernel.shape[-1]))
  return _stride2_input_grad(dy, kernel, x_shape), dkernel.reshape(kernel.shape)


def _stride2_input_grad(dy: jax.Array, kernel: jax.Array, x_shape) -> jax.Array:
  """dL/dx of the 3x3 stride-2 'SAME' conv: dy [b, h', w', out] -> [b, h, w, c].

  Input position m = 2k + p (parity p) receives dy[k + offset] @ kernel[t]^T for each tap t
  with 2 (k + offset) + t - pad_before = m. Per parity pair that is a small conv of dy
  (1, 2 or 4 taps), computed as patches + matmul; the four results are interleaved.
  """
  batch, height, width, in_channels = x_shape
  pads = lax.padtype_to_pads((height, width), (3, 3), (2, 2), "SAME")

  def taps(parity, pad_before):  # [(kernel tap, offset into dy)] for one axis
    return [(t, (parity + pad_before - t) // 2) for t in range(3)
            if (parity + pad_before - t) % 2 == 0]

  dyp = jnp.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = [(height - p + 1) // 2 for p in (0, 1)]  # positions of each parity
  cols = [(width - p + 1) // 2 for p in (0, 1)]

  def phase(pr, pc):  # [b, rows[0], cols[0], c]: parity (pr, pc), zero-padded
    pairs = [(tr, orow, tc, ocol) for tr, orow in taps(pr, pads[0][0])
             for tc, ocol in taps(pc, pads[1][0])]
    patches = jnp.concatenate(
        [dyp[:, 1 + orow:1 + orow + rows[pr], 1 + ocol:1 + ocol + cols[pc]]
         for _, orow, _, ocol in pairs], axis=-1)
    weights = jnp.concatenate([kernel[tr, tc].T for tr, _, tc, _ in pairs], axis=0)
    return jnp.pad(jnp.dot(patches, weights),
                   ((0, 0), (0, rows[0] - rows[pr]), (0, cols[0] - cols[pc]), (0, 0)))

  # [b, rows[0], 2, cols[0], 2, c]
  dx = jnp.stack([jnp.stack([phase(pr, pc) for pc in (0, 1)], axis=3) for pr in (0, 1)], axis=2)
  dx = dx.reshape(batch, 2 * rows[0], 2 * cols[0], in_channels)
  return dx[:, :height, :width]


_conv3x3_stride2.defvjp(_stride2_forward, _stride2_backward)


def _conv3x3_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 3x3 'SAME' conv of a narrow layer as one matmul: [b, h, w, c] -> [b, h, w, o].

  Each of the 9 taps is applied either on the input side, as a shifted copy of the input in
  a patch matrix (im2col), or on the output side, as a shifted slice of a matmul output
  with one block of o columns per tap, summed in one fused loop. Which axes' taps go where
  is chosen to move the least data per pixel: all 9 in patches (9c + o: a 1- or 3-channel
  input layer), 3 horizontal in patches and 3 vertical on the output (3c + 3o), or all 9
  on the output (c + 9o: a 1- or 3-channel output layer).
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  # (rows_in, cols_in): the kernel axes whose taps are gathered into patches.
  def floats_moved_per_pixel(split):
    taps_in = (3 if split[0] else 1) * (3 if split[1] else 1)
    return taps_in * c + 9 // taps_in * o

  rows_in, cols_in = min([(True, True), (False, True), (False, False)],
                         key=floats_moved_per_pixel)
  in_rows, in_cols = (range(3) if rows_in else [0]), (range(3) if cols_in else [0])
  out_rows, out_cols = ([0] if rows_in else range(3)), ([0] if cols_in else range(3))
  in_taps = [(i, j) for i in in_rows for j in in_cols]
  out_taps = [(i, j) for i in out_rows for j in out_cols]
  # Block (input tap, output tap) of the weight matrix is the kernel tap they add up to.
  weights = jnp.block([[kernel[ii + io, ji + jo] for io, jo in out_taps] for ii, ji in in_taps])
  # Patches cover the output rows / columns, plus the 2 padding ones where the output side
  # shifts along that axis.
  hh, ww = (h if rows_in else h + 2), (w if cols_in else w + 2)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([xp[:, i:i + hh, j:j + ww] for i, j in in_taps], axis=-1)
  z = jnp.dot(patches.reshape(-1, patches.shape[-1]), weights)   # [b * hh * ww, taps * o]
  # Output pixel r (flattened) adds output tap (i, j) from row r + i * ww + j of z. The
  # last rows of an image would read the next image's: they are padding, dropped below.
  n = z.shape[0] - (out_taps[-1][0] * ww + out_taps[-1][1])
  y = sum(z[i * ww + j:i * ww + j + n, k * o:(k + 1) * o] for k, (i, j) in enumerate(out_taps))
  y = jnp.pad(y, ((0, z.shape[0] - n), (0, 0))).reshape(b, hh, ww, o)
  return y[:, :h, :w]
