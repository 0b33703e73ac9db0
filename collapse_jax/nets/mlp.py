"""A small time-conditioned MLP for vector data (2-D toys): the diffusion / flow network.

``TimeMLP(x [b, d], t [b]) -> [b, d]``: the input and a sinusoidal embedding of ``t``
(`unet.timestep_embedding`, so ``t`` is used as given: DDPM's step index, EDM's c_noise,
or ``1000 * t`` for a flow time in [0, 1]) are each projected to ``width``, summed, and
passed through ``depth`` SiLU residual layers; a zero-initialised head maps back to ``d``.
"""
from __future__ import annotations

import chex
import flax.linen as nn
import jax

from collapse_jax.nets.unet import timestep_embedding


class TimeMLP(nn.Module):
  """Attributes: width (hidden units), depth (hidden residual layers), time_dim (embedding)."""
  width: int = 256
  depth: int = 3
  time_dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    """x [batch, d], t [batch] float -> [batch, d] (dtype of x)."""
    chex.assert_rank(x, 2)
    chex.assert_shape(t, (x.shape[0],))
    temb = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(timestep_embedding(t, self.time_dim))))
    h = nn.Dense(self.width)(x) + temb
    for _ in range(self.depth):
      h = h + nn.Dense(self.width)(nn.silu(h))
    # Zero-initialised head: the untrained network predicts 0 (as the UNet's last conv).
    out = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros_init())(nn.silu(h))
    return out.astype(x.dtype)
