"""'SAME' convolutions (kernel 1 or 3, stride 1 or 2, NHWC / HWIO) computed with matmuls.

Why: XLA:CPU runs convolution gradients inside a while loop as naive loops (layers.py), and
its matmuls are fast. Each formulation below gives the same maths as
`lax.conv_general_dilated` (tests/test_layers_unet.py checks values and both gradients).

Where a formulation's autodiff gradient ends in a sum of shifted or padded slices, the VJP
is written by hand: XLA:CPU fuses such elementwise sums into every consumer and recomputes
them there (e.g. inside transposing copies for later weight gradients), which cost a UNet
step ~200 ms. Gradients that end in a matmul are written once.
"""

import jax
import jax.numpy as jnp
from jax import lax

from collapse_jax.models.winograd import conv3x3_winograd, upsample_conv3x3_winograd

# Below this many input or output channels, Winograd's transforms cost more than the 4x
# fewer multiply-adds save (measured on 2 CPU cores: a 1->32 conv step 51 ms vs 15 ms
# with im2col; 64->32 at 28x28 79 ms vs 118 ms).
WINOGRAD_MIN_CHANNELS = 32


def conv_matmul(x: jax.Array, kernel: jax.Array, stride: int,
                upsample: bool = False) -> jax.Array:
  """'SAME' convolution built from matmuls: a drop-in for `layers.conv_xla` (same
  arguments, same [batch, ceil(h / stride), ceil(w / stride), out] result, same maths).

  1x1: one matmul. 3x3 stride 1: Winograd F(4x4, 3x3) (`winograd.py`) when both channel
  counts reach WINOGRAD_MIN_CHANNELS, else 3-tap row patches. 3x3 stride 2: full patches.

  With `upsample`, x is first upsampled x2 by nearest neighbour (the conv output is
  [batch, 2h, 2w, out]; stride must be 1). For a wide 3x3 kernel the two are one Winograd
  op on the low-resolution input, which never writes the upsampled image.
  """
  kh, kw, in_channels, out_channels = kernel.shape
  wide = min(in_channels, out_channels) >= WINOGRAD_MIN_CHANNELS
  if upsample:
    if stride != 1:
      raise ValueError(f"upsampling conv needs stride 1, got {stride}")
    if (kh, kw) == (3, 3) and wide:
      return upsample_conv3x3_winograd(x, kernel)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  if (kh, kw) == (1, 1):
    return jnp.dot(x[:, ::stride, ::stride, :], kernel.reshape(-1, out_channels))
  if (kh, kw, stride) == (3, 3, 1):
    return conv3x3_winograd(x, kernel) if wide else _conv3x3_rows(x, kernel)
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
  out_channels = kernel.shape[-1]
  dkernel = jnp.dot(patches.reshape(-1, patches.shape[-1]).T, dy.reshape(-1, out_channels))
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
  phases = []
  for pr in (0, 1):
    row_phases = []
    for pc in (0, 1):
      pairs = [(tr, orow, tc, ocol) for tr, orow in taps(pr, pads[0][0])
               for tc, ocol in taps(pc, pads[1][0])]
      patches = jnp.concatenate(
          [dyp[:, 1 + orow:1 + orow + rows[pr], 1 + ocol:1 + ocol + cols[pc]]
           for _, orow, _, ocol in pairs], axis=-1)
      weights = jnp.concatenate([kernel[tr, tc].T for tr, _, tc, _ in pairs], axis=0)
      phase = jnp.dot(patches, weights)  # [b, rows[pr], cols[pc], c]
      row_phases.append(jnp.pad(phase, ((0, 0), (0, rows[0] - rows[pr]),
                                        (0, cols[0] - cols[pc]), (0, 0))))
    phases.append(jnp.stack(row_phases, axis=3))  # [b, rows[0], cols[0], 2, c]
  dx = jnp.stack(phases, axis=2).reshape(batch, 2 * rows[0], 2 * cols[0], in_channels)
  return dx[:, :height, :width]


_conv3x3_stride2.defvjp(_stride2_forward, _stride2_backward)


def _conv3x3_rows(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 3x3 'SAME' conv from 3-tap row patches: [b, h, w, c] -> [b, h, w, out].

  Full 3x3 patches are 9x the input; in memory-bound CPU steps that copy costs more than
  the matmul. Here the patches hold only the 3 horizontal taps (3x the input), one matmul
  applies all 3 kernel rows at once, and the vertical taps become offsets of `w` rows in
  the flattened padded image, summed in one fused loop. (Measured ~10% faster per UNet
  training step than full 9-tap patches.)
  """
  b, h, w, c = x.shape
  out_channels = kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = jnp.concatenate([xp[:, :, j:j + w] for j in range(3)], axis=-1)  # [b, h+2, w, 3c]
  # Column block i of the weight matrix is kernel row i: [(kw, c), (kh, out)].
  weights = kernel.transpose(1, 2, 0, 3).reshape(3 * c, 3 * out_channels)
  y = jnp.dot(rows.reshape(-1, 3 * c), weights)  # [b * (h+2) * w, 3 * out]
  # Output at flattened padded row r sums kernel row i applied at r + i * w. Rows h, h+1 of
  # each image would straddle two images: computed as padding, then dropped.
  n = (b * (h + 2) - 2) * w
  out = sum(y[i * w:i * w + n, i * out_channels:(i + 1) * out_channels] for i in range(3))
  out = jnp.pad(out, ((0, 2 * w), (0, 0))).reshape(b, h + 2, w, out_channels)
  return out[:, :h]
