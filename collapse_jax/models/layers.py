"""Convolution building blocks with a choice of implementation.

`Conv` keeps `nn.Conv`'s parameters (`kernel` [kh, kw, in, out], `bias` [out]) and
initialisers and only changes how the same function is computed, selected by `impl`:

- "xla": `lax.conv_general_dilated`, XLA's native convolution.
- "matmul": the same maths as matmuls (see `conv_matmul`): Winograd F(4x4, 3x3) for wide
  3x3 stride-1 convs, explicit patches (im2col) otherwise.
- "auto": "matmul" on CPU, "xla" on GPU/TPU. XLA:CPU runs a lone convolution fast
  (through YNNPACK), but inside a while loop, which is where training runs
  (`training.train` is a `fori_loop`), its convolution gradients are not: XLA:CPU brings
  convolutions into the canonical form its fast kernels take only in the entry
  computation, so the gradient convs of a loop body run as naive loops (measured: a 3x3
  32->64 kernel gradient 200 ms in a loop vs 5 ms outside; a digits VAE generation 38 s
  with "xla" vs 1.6 s with im2col). `resolve_conv_impl` is the one place for that policy.

All tensors are NHWC; padding is always 'SAME' (XLA's convention: for stride 2 the extra
padding row/column goes at the end).
"""

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from collapse_jax.models.winograd import conv3x3_winograd

ConvImpl = Literal["auto", "xla", "matmul"]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


# Below this many input or output channels, Winograd's transforms cost more than the 4x
# fewer multiply-adds save (measured on 2 CPU cores: a 1->32 conv step 51 ms vs 15 ms
# with im2col; 64->32 at 28x28 79 ms vs 118 ms).
WINOGRAD_MIN_CHANNELS = 32


def resolve_conv_impl(impl: ConvImpl) -> Literal["xla", "matmul"]:
  """The implementation `impl` stands for on the default backend (see the module docstring)."""
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  if impl not in ("xla", "matmul"):
    raise ValueError(f"unknown conv impl {impl!r}; expected 'auto', 'xla' or 'matmul'")
  return impl


def conv_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'SAME' convolution with XLA's native op.

  Args:
    x: [batch, height, width, in_channels].
    kernel: [kh, kw, in_channels, out_channels].
    stride: spatial stride (same on both axes).

  Returns:
    [batch, ceil(height / stride), ceil(width / stride), out_channels].
  """
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), "SAME", dimension_numbers=_DIMENSION_NUMBERS)


def conv_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'SAME' convolution built from matmuls; same maths as `conv_xla`.

  1x1: one matmul. 3x3 stride 1: Winograd F(4x4, 3x3) (`winograd.py`) when both channel
  counts reach WINOGRAD_MIN_CHANNELS, else 3-tap row patches. 3x3 stride 2: full patches.

  Args:
    x: [batch, height, width, in_channels].
    kernel: [kh, kw, in_channels, out_channels].
    stride: spatial stride (same on both axes).

  Returns:
    [batch, ceil(height / stride), ceil(width / stride), out_channels].
  """
  kh, kw, in_channels, out_channels = kernel.shape
  if (kh, kw) == (1, 1):
    return jnp.dot(x[:, ::stride, ::stride, :], kernel.reshape(-1, out_channels))
  if (kh, kw, stride) == (3, 3, 1):
    if min(in_channels, out_channels) >= WINOGRAD_MIN_CHANNELS:
      return conv3x3_winograd(x, kernel)
    return _conv3x3_rows(x, kernel)
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

  The VJP is written by hand: autodiff of the patches sums 9 padded slices for the input
  gradient, an elementwise expression that XLA:CPU fuses into (and recomputes in) every
  consumer, such as transposing copies for later weight gradients (~200 ms per UNet step).
  Here the input gradient comes from one matmul per output parity instead (see
  `_stride2_input_grad`), whose results XLA writes once.
  """
  return jnp.dot(_stride2_patches(x), kernel.reshape(-1, kernel.shape[-1]))


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


class Conv(nn.Module):
  """2D 'SAME' convolution, parameter-compatible with `nn.Conv` (NHWC, kernel HWIO).

  Attributes:
    features: output channels.
    kernel_size: 1 or 3 (square kernels).
    strides: 1 or 2.
    use_bias: add a learned bias.
    impl: "auto" | "xla" | "matmul" (see module docstring).
    kernel_init / bias_init: as in `nn.Conv` (LeCun normal / zeros by default).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  use_bias: bool = True
  impl: ConvImpl = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, h, w, in] -> [batch, ceil(h / strides), ceil(w / strides), features]."""
    if self.kernel_size not in (1, 3) or self.strides not in (1, 2):
      raise ValueError(f"Conv supports kernel 1/3 and stride 1/2, got "
                       f"{self.kernel_size}/{self.strides}")
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    conv = conv_matmul if resolve_conv_impl(self.impl) == "matmul" else conv_xla
    y = conv(x, kernel, self.strides)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class GroupNorm(nn.Module):
  """GroupNorm over NHWC images, parameter-compatible with `nn.GroupNorm` (`scale`, `bias`).

  Same maths as `nn.GroupNorm` (biased variance as E[x^2] - E[x]^2, clamped at 0). Why not
  `nn.GroupNorm`: it reduces over a [b, h, w, groups, c / groups] view, which XLA:CPU runs
  ~1.5x slower (forward + backward) than summing each channel over h, w first, as here.

  Attributes:
    num_groups: groups of channels sharing a mean and variance; must divide the channels.
    epsilon: added to the variance.
  """
  num_groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, h, w, c] -> [batch, h, w, c]."""
    batch, height, width, channels = x.shape
    if channels % self.num_groups:
      raise ValueError(f"{self.num_groups} groups do not divide {channels} channels")
    group_size = channels // self.num_groups
    count = height * width * group_size

    def group_mean(values):  # [b, h, w, c] -> [b, groups]
      return values.sum(axis=(1, 2)).reshape(batch, self.num_groups, group_size).sum(-1) / count

    mean = group_mean(x)
    var = jnp.maximum(group_mean(x * x) - mean ** 2, 0.0)
    scale = self.param("scale", nn.initializers.ones_init(), (channels,))
    bias = self.param("bias", nn.initializers.zeros_init(), (channels,))
    # y = x * a + d with per-(image, channel) a, d: one elementwise pass over x.
    a = jnp.repeat(lax.rsqrt(var + self.epsilon), group_size, axis=-1) * scale
    d = bias - jnp.repeat(mean, group_size, axis=-1) * a
    return x * a[:, None, None, :] + d[:, None, None, :]


def upsample_nearest(x: jax.Array, size: Sequence[int] | None = None) -> jax.Array:
  """Nearest-neighbour x2 upsampling, optionally cropped to `size`.

  Args:
    x: [batch, h, w, c].
    size: (height, width) to crop to; lets an odd-sized skip (e.g. 7 -> 4 -> 7) line up.

  Returns:
    [batch, 2h, 2w, c], or [batch, *size, c] when `size` is given.
  """
  b, h, w, c = x.shape
  y = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
  if size is not None:
    y = y[:, :size[0], :size[1]]
  return y
