"""Convolutional encoder / decoder networks for a VAE on small images (8x8 .. 32x32).

Each entry of `channels` is one resolution level: the encoder halves the size per level
with a stride-2 conv, the decoder mirrors it with nearest-neighbour upsampling + conv and
crops to the requested size (so 28 -> 14 -> 7 -> 14 -> 28 and 8 -> 4 -> 2 -> 4 -> 8 both
work). The VAE loss and training live with the model family, not here.
"""

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.nets.layers import Conv, ConvImpl


class Encoder(nn.Module):
  """q(z | x) parameters.

  Attributes:
    latent_dim: size of z.
    channels: conv channels per level, e.g. (32, 64).
    conv_impl: "auto" | "xla" | "matmul".
  """
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  conv_impl: ConvImpl = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[batch, height, width, c] -> (mean, logvar), each [batch, latent_dim]."""
    chex.assert_rank(x, 4)
    h = nn.silu(Conv(self.channels[0], impl=self.conv_impl)(x))
    for ch in self.channels:
      h = nn.silu(Conv(ch, strides=2, impl=self.conv_impl)(h))
    h = h.reshape(h.shape[0], -1)
    mean, logvar = jnp.split(nn.Dense(2 * self.latent_dim)(h), 2, axis=-1)
    return mean, logvar


class Decoder(nn.Module):
  """p(x | z) parameters: per-pixel logits (Bernoulli) or means (Gaussian).

  Attributes:
    latent_dim: size of z (checked against the input).
    out_shape: (height, width, channels) of the images.
    channels: the encoder's per-level channels, in encoder order (used reversed).
    conv_impl: "auto" | "xla" | "matmul".
  """
  latent_dim: int
  out_shape: Sequence[int]
  channels: Sequence[int] = (32, 64)
  conv_impl: ConvImpl = "auto"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """[batch, latent_dim] -> [batch, *out_shape] (unnormalised: logits or means)."""
    chex.assert_shape(z, (None, self.latent_dim))
    height, width, out_channels = self.out_shape
    levels = len(self.channels)
    # Sizes at each level, top (full size) first, so upsampling can crop to the encoder's:
    # i stride-2 'SAME' convs take a size to ceil(size / 2^i).
    sizes = [(-(-height // 2**i), -(-width // 2**i)) for i in range(levels + 1)]
    bh, bw = sizes[-1]
    h = nn.silu(nn.Dense(bh * bw * self.channels[-1])(z)).reshape(-1, bh, bw, self.channels[-1])
    for level in reversed(range(levels)):
      h = nn.silu(Conv(self.channels[level], impl=self.conv_impl)(h, upsample_to=sizes[level]))
    return Conv(out_channels, impl=self.conv_impl)(h)
