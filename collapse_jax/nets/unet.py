"""DDPM++-style UNet for noise / denoiser prediction (unconditional: no class labels).

The layout follows Song et al.'s DDPM++ (as used by EDM and by Bertrand et al.'s flow
matching runs): a 3x3 input conv, `len(channel_mult)` resolution levels of
`num_res_blocks` residual blocks (self-attention after each block at the resolutions in
`attn_resolutions`), stride-2 conv downsampling, a res-attn-res middle, a mirrored decoder
that concatenates the encoder's activations (one more block per level than the encoder),
nearest-neighbour + conv upsampling, and GroupNorm-SiLU-conv output. Residual and
attention branches are summed then scaled by 1/sqrt(2) (DDPM++'s `skip_rescale`).

Odd sizes work (28 -> 14 -> 7 -> 4 -> 7 ...): the decoder crops each upsampled map to the
matching skip's size.
"""

from collections.abc import Sequence
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.nets.layers import Conv, ConvImpl, GroupNorm

_SKIP_SCALE = 1 / math.sqrt(2)


def group_norm(channels: int) -> GroupNorm:
  """DDPM++'s GroupNorm: up to 32 groups of at least 4 channels (so tiny test nets work)."""
  return GroupNorm(num_groups=max(1, min(32, channels // 4)), epsilon=1e-6)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal embedding of a float noise level / time, as in DDPM.

  `t` is used as given (e.g. DDPM's step index in [0, 1000), or EDM's log(sigma) / 4); the
  frequencies span 1 .. 1 / max_period.

  Args:
    t: [batch] float.
    dim: even embedding size.

  Returns:
    [batch, dim]: cos features then sin features.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv twice, with the time embedding added between the convs.

  [b, h, w, c_in], temb [b, d] -> [b, h, w, out_channels].
  """
  out_channels: int
  dropout: float
  conv_impl: ConvImpl

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
    h = nn.silu(group_norm(x.shape[-1])(x))
    h = Conv(self.out_channels, impl=self.conv_impl)(h)
    h = h + nn.Dense(self.out_channels)(nn.silu(temb))[:, None, None, :]
    h = nn.silu(group_norm(self.out_channels)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    # Zero-initialised last conv: each block starts as the identity (DDPM++'s init_scale=0).
    h = Conv(self.out_channels, impl=self.conv_impl, kernel_init=nn.initializers.zeros_init())(h)
    if x.shape[-1] != self.out_channels:
      x = Conv(self.out_channels, kernel_size=1, impl=self.conv_impl)(x)
    return (x + h) * _SKIP_SCALE


class AttnBlock(nn.Module):
  """Single-head self-attention over all h*w positions. [b, h, w, c] -> [b, h, w, c]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, height, width, c = x.shape
    h = group_norm(c)(x).reshape(b, height * width, c)
    q, k, v = jnp.split(nn.Dense(3 * c)(h), 3, axis=-1)
    weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c), axis=-1)
    h = jnp.einsum("bqk,bkc->bqc", weights, v)
    h = nn.Dense(c, kernel_init=nn.initializers.zeros_init())(h)
    return (x + h.reshape(b, height, width, c)) * _SKIP_SCALE


class UNet(nn.Module):
  """Noise-level conditioned UNet; output has the input's shape.

  Attributes:
    base_channels: channels at the first level (DDPM++ CIFAR: 128).
    channel_mult: per-level channel multipliers; level i runs at input_size / 2**i.
    num_res_blocks: residual blocks per encoder level (decoder: one more).
    attn_resolutions: spatial sizes (height) at which self-attention follows each block.
    dropout: dropout rate inside residual blocks (active when `train=True`).
    conv_impl: "auto" | "xla" | "matmul" (see layers.py).
  """
  base_channels: int = 128
  channel_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  conv_impl: ConvImpl = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """Predicts noise (or a denoised image, per the caller's loss).

    Args:
      x: [batch, height, width, channels] noisy images.
      t: [batch] float noise level / time (see `timestep_embedding`).
      train: enables dropout (needs a 'dropout' rng).

    Returns:
      [batch, height, width, channels] (float32 with the default float32 params).
    """
    chex.assert_rank(x, 4)
    chex.assert_shape(t, (x.shape[0],))
    temb_dim = 4 * self.base_channels
    temb = nn.Dense(temb_dim)(timestep_embedding(t, self.base_channels))
    temb = nn.Dense(temb_dim)(nn.silu(temb))

    def res_block(h, level):
      block = ResBlock(self.base_channels * self.channel_mult[level], self.dropout, self.conv_impl)
      h = block(h, temb, train)
      return AttnBlock()(h) if h.shape[1] in self.attn_resolutions else h

    h = Conv(self.base_channels, impl=self.conv_impl)(x)
    skips = [h]
    for level in range(len(self.channel_mult)):
      for _ in range(self.num_res_blocks):
        h = res_block(h, level)
        skips.append(h)
      if level != len(self.channel_mult) - 1:
        h = Conv(h.shape[-1], strides=2, impl=self.conv_impl)(h)
        skips.append(h)

    mid_channels = h.shape[-1]
    h = ResBlock(mid_channels, self.dropout, self.conv_impl)(h, temb, train)
    h = AttnBlock()(h)
    h = ResBlock(mid_channels, self.dropout, self.conv_impl)(h, temb, train)

    for level in reversed(range(len(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = res_block(jnp.concatenate([h, skips.pop()], axis=-1), level)
      if level != 0:
        h = Conv(h.shape[-1], impl=self.conv_impl)(h, upsample_to=skips[-1].shape[1:3])
    assert not skips

    h = nn.silu(group_norm(h.shape[-1])(h))
    out = Conv(x.shape[-1], impl=self.conv_impl, kernel_init=nn.initializers.zeros_init())(h)
    chex.assert_equal_shape([out, x])
    return out
