"""Network building blocks: a convolution with a choice of implementation, GroupNorm,
nearest-neighbour upsampling.

`Conv` keeps `nn.Conv`'s parameters (`kernel` [kh, kw, in, out], `bias` [out]) and
initialisers and only changes how the same function is computed, selected by `impl`:

- "xla": `lax.conv_general_dilated`, XLA's native convolution.
- "matmul": the same maths as matmuls, gradients by hand where autodiff's are slow
  (`matmul_conv.py`): Winograd for wide 3x3 stride-1 convs (fused with a preceding x2
  upsampling, `Conv(...)(x, upsample_to=...)`), patches (im2col) and shifted matmul
  outputs otherwise.
- "auto": "matmul" on CPU, "xla" on GPU/TPU. XLA:CPU runs a lone convolution fast
  (through YNNPACK), but inside a while loop, which is where training runs
  (`training.train` is a `fori_loop`), its convolution gradients are not: XLA:CPU brings
  convolutions into the canonical form its fast kernels take only in the entry
  computation, so the gradient convs of a loop body run as naive loops (a kernel gradient
  ~40x slower than outside one). `resolve_conv_impl` is the one place for that policy.
  benchmarks/conv_vs_torch.py times both against PyTorch (figures in its README).

All tensors are NHWC; padding is always 'SAME' (XLA's convention: for stride 2 the extra
padding row/column goes at the end).
"""

from collections.abc import Sequence
from functools import partial
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from collapse_jax.ops.matmul_conv import conv_matmul, uses_winograd
from collapse_jax.ops.winograd import upsample_conv3x3_winograd

ConvImpl = Literal["auto", "xla", "matmul"]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_conv_impl(impl: ConvImpl) -> Literal["xla", "matmul"]:
  """The implementation `impl` stands for on the default backend (see the module docstring)."""
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  if impl not in ("xla", "matmul"):
    raise ValueError(f"unknown conv impl {impl!r}; expected 'auto', 'xla' or 'matmul'")
  return impl


def conv_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """'SAME' convolution with XLA's native op, `stride` on both axes: x [batch, height, width,
  in_channels], kernel [kh, kw, in_channels, out_channels] ->
  [batch, ceil(height / stride), ceil(width / stride), out_channels]."""
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), "SAME", dimension_numbers=_DIMENSION_NUMBERS)


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
  def __call__(self, x: jax.Array, upsample_to: Sequence[int] | None = None) -> jax.Array:
    """[batch, h, w, in] -> [batch, ceil(h / strides), ceil(w / strides), features].

    With `upsample_to` = (height, width), x is first `upsample_nearest`-ed to that size.
    The matmul path fuses an exact x2 upsampling into a stride-1 Winograd conv.
    """
    if self.kernel_size not in (1, 3) or self.strides not in (1, 2):
      raise ValueError(f"Conv supports kernel 1/3 and stride 1/2, got "
                       f"{self.kernel_size}/{self.strides}")
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    # The kernel's dtype is the compute dtype (a bf16 run casts the parameters): XLA's conv
    # refuses mixed operands, and the matmul path would silently compute in float32.
    x = x.astype(kernel.dtype)
    conv = conv_matmul if resolve_conv_impl(self.impl) == "matmul" else conv_xla
    if upsample_to is None:
      y = conv(x, kernel, self.strides)
    elif (conv is conv_matmul and self.strides == 1 and uses_winograd(kernel.shape)
          and tuple(upsample_to) == (2 * x.shape[1], 2 * x.shape[2])):
      y = upsample_conv3x3_winograd(x, kernel)  # x stays at low resolution
    else:
      y = conv(upsample_nearest(x, upsample_to), kernel, self.strides)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


class GroupNorm(nn.Module):
  """GroupNorm over NHWC images, parameter-compatible with `nn.GroupNorm` (`scale`, `bias`).

  Same maths as `nn.GroupNorm` (biased variance as E[x^2] - E[x]^2, clamped at 0), computed
  by `group_norm` below.

  Attributes:
    num_groups: groups of channels sharing a mean and variance; must divide the channels.
    epsilon: added to the variance.
  """
  num_groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, h, w, c] -> [batch, h, w, c]."""
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(f"{self.num_groups} groups do not divide {channels} channels")
    scale = self.param("scale", nn.initializers.ones_init(), (channels,))
    bias = self.param("bias", nn.initializers.zeros_init(), (channels,))
    return group_norm(x, scale, bias, self.num_groups, self.epsilon)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
               epsilon: float) -> jax.Array:
  """GroupNorm of x [b, h, w, c] with per-channel scale and bias [c].

  Why not `nn.GroupNorm`: it reduces over a [b, h, w, groups, c / groups] view, which
  XLA:CPU runs ~1.5x slower (forward + backward) than summing each channel over h, w
  first, as here. Why a hand-written VJP: autodiff's input gradient is a sum of several
  full-size terms (through the mean, E[x^2] and the output), which XLA:CPU fuses into each
  consumer and recomputes there; written as dx = dy * A + x * B + C with per-(image,
  channel) A, B, C, each consumer reads two tensors.
  """
  return _group_norm_forward(x, scale, bias, num_groups, epsilon)[0]


def _group_norm_forward(x, scale, bias, num_groups, epsilon):
  batch, height, width, channels = x.shape
  group_size = channels // num_groups
  count = height * width * group_size

  def group_mean(values):  # [b, h, w, c] -> [b, groups]
    return values.sum(axis=(1, 2)).reshape(batch, num_groups, group_size).sum(-1) / count

  mean = group_mean(x)
  var = jnp.maximum(group_mean(x * x) - mean ** 2, 0.0)
  rstd = lax.rsqrt(var + epsilon)
  # y = x * a + d with per-(image, channel) a, d [b, c]: one elementwise pass over x.
  a = jnp.repeat(rstd, group_size, axis=-1) * scale
  d = bias - jnp.repeat(mean, group_size, axis=-1) * a
  return x * a[:, None, None, :] + d[:, None, None, :], (x, scale, mean, rstd)


def _group_norm_backward(num_groups, epsilon, residuals, dy):
  del epsilon  # in rstd already
  x, scale, mean, rstd = residuals
  batch, height, width, channels = x.shape
  group_size = channels // num_groups
  count = height * width * group_size

  def group_sum(values):  # [b, c] -> [b, groups]
    return values.reshape(batch, num_groups, group_size).sum(-1)

  def per_channel(values):  # [b, groups] -> [b, c]
    return jnp.repeat(values, group_size, axis=-1)

  # Per-(image, channel) sums over h, w of dy and of dy * xhat, xhat = (x - mean) * rstd.
  sum_dy = dy.sum(axis=(1, 2))
  rstd_c = per_channel(rstd)
  sum_dy_xhat = rstd_c * ((dy * x).sum(axis=(1, 2)) - per_channel(mean) * sum_dy)
  # With g = dy * scale: dx = rstd * (g - mean_group(g) - xhat * mean_group(g * xhat)),
  # i.e. dx = dy * A + x * B + C with per-(image, channel) A, B, C [b, c].
  coef_x = -rstd ** 2 * group_sum(scale * sum_dy_xhat) / count        # [b, groups]
  coef_1 = -rstd * group_sum(scale * sum_dy) / count - coef_x * mean
  a, b, c = (v[:, None, None, :] for v in (rstd_c * scale, per_channel(coef_x),
                                           per_channel(coef_1)))
  return dy * a + x * b + c, sum_dy_xhat.sum(0), sum_dy.sum(0)


group_norm.defvjp(_group_norm_forward, _group_norm_backward)


def upsample_nearest(x: jax.Array, size: Sequence[int] | None = None) -> jax.Array:
  """Nearest-neighbour x2 upsampling: [batch, h, w, c] -> [batch, 2h, 2w, c], cropped to
  [batch, *size, c] when `size` = (height, width) is given (so that an odd-sized skip, e.g.
  7 -> 4 -> 7, lines up)."""
  b, h, w, c = x.shape
  y = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
  return y if size is None else y[:, :size[0], :size[1]]
