"""A decoder-only transformer (Flax Linen) in its GPT-2 and Llama-2 forms, with a KV cache.

``Transformer(config)(tokens [b, t], start, cache) -> (logits [b, t, vocab] float32, cache)``.
Without a cache it is the causal forward pass over positions ``0 .. t-1`` (training, test
loss). With one (``init_cache``: per layer keys and values ``[b, heads, length, d_head]``)
the ``t`` tokens sit at positions ``start .. start+t-1``: their keys and values are written
into the cache and every query attends to the cached positions up to its own (prefill with
``start=0``, then one token per step).

The two architectures differ only in four switches (`TransformerConfig`):
  GPT-2     learned positions, LayerNorm, GELU MLP, tied input/output embedding, biases
  Llama-2   rotary positions, RMSNorm, SwiGLU MLP, untied output head, no biases
Both are pre-norm with a final norm. `PRESETS` reproduce the parameter counts of
Gerstgrasser et al.'s models for a vocabulary of 8,000 (RESEARCH.md section 4), with
d_head 64; the ``*-tiny`` / ``*-cpu`` / ``*-smoke`` presets are for CPUs and tests.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from collapse_jax.ops import dense_vjps

Cache = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (keys, values) [b, h, s, d_head]

ARCHITECTURES = {
    "gpt2": dict(positions="learned", norm="layernorm", mlp="gelu", tied=True, bias=True),
    "llama2": dict(positions="rotary", norm="rmsnorm", mlp="swiglu", tied=False, bias=False),
}

# name -> (architecture, d_model, layers, heads, d_ff, max_len). GPT-2 9M's count needs
# 2,048 learned positions (8,890,880 - the rest = 2048 * 256); rotary models have no
# position table, their max_len is a choice (Llama-2's 4,096).
PRESETS: dict[str, tuple[str, int, int, int, int, int]] = {
    "gpt2-9m": ("gpt2", 256, 8, 4, 1024, 2048),
    "llama2-12m": ("llama2", 256, 8, 4, 1024, 4096),
    "llama2-42m": ("llama2", 512, 8, 8, 2048, 4096),
    "llama2-126m": ("llama2", 768, 12, 12, 3072, 4096),
    "gpt2-cpu": ("gpt2", 128, 2, 2, 512, 512),
    "llama2-cpu": ("llama2", 128, 2, 2, 384, 512),
    "gpt2-tiny": ("gpt2", 64, 2, 2, 256, 512),
    "llama2-tiny": ("llama2", 64, 2, 2, 192, 512),
    "gpt2-smoke": ("gpt2", 32, 1, 2, 64, 64),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  d_ff: int
  max_len: int
  positions: str = "learned"   # "learned" | "rotary"
  norm: str = "layernorm"      # "layernorm" | "rmsnorm"
  mlp: str = "gelu"            # "gelu" | "swiglu"
  tied: bool = True            # output head = input embedding transposed
  bias: bool = True            # biases in the dense layers (GPT-2)
  dtype: Any = jnp.float32     # compute dtype (bf16 on accelerators); params stay float32
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5

  @property
  def d_head(self) -> int:
    return self.d_model // self.num_heads

  @classmethod
  def preset(cls, name: str, vocab_size: int, **overrides) -> "TransformerConfig":
    arch, d, layers, heads, ff, max_len = PRESETS[name]
    return cls(vocab_size=vocab_size, d_model=d, num_layers=layers, num_heads=heads, d_ff=ff,
               max_len=max_len, **(ARCHITECTURES[arch] | overrides))


def init_cache(config: TransformerConfig, batch: int, length: int, dtype=jnp.float32) -> Cache:
  """An empty KV cache for ``batch`` sequences of up to ``length`` positions."""
  # Heads before positions: attention is then a plain batched matmul over the cache, where
  # [b, s, h, d] would make XLA:CPU transpose the whole cache at every decoding step.
  shape = (batch, config.num_heads, length, config.d_head)
  return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
               for _ in range(config.num_layers))


def grow_cache(cache: Cache, length: int) -> Cache:
  """``cache`` with room for ``length`` positions (the new ones empty)."""
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)))
  return jax.tree.map(pad, cache)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding of ``x [b, t, h, d]`` at ``positions [t]`` (Llama's half-split pairs:
  dimension i rotates with i + d/2)."""
  half = x.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * freqs[None, :]   # [t, half]
  cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class Dense(nn.Module):
  """nn.Dense (its parameters, initialisers, dtype promotion and values) whose weight
  gradient is `dense_vjps.matmul`'s: the plain product XLA:CPU runs fast."""
  features: int
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.config.bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.config.dtype)
    y = dense_vjps.matmul(x, kernel)
    return y if bias is None else y + bias


def _dense(features: int, config: TransformerConfig, name: str) -> Dense:
  return Dense(features, config, name=name)


def _norm(config: TransformerConfig, name: str) -> nn.Module:
  if config.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=config.norm_eps, dtype=config.dtype, name=name)
  return nn.LayerNorm(epsilon=config.norm_eps, dtype=config.dtype, name=name)


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, cache: tuple[jax.Array, jax.Array] | None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """x [b, t, d_model], positions [t] -> ([b, t, d_model], updated (keys, values) or None)."""
    c = self.config
    b, t, _ = x.shape
    qkv = _dense(3 * c.d_model, c, "qkv")(x).reshape(b, t, 3, c.num_heads, c.d_head)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if c.positions == "rotary":
      q, k = rotary(q, positions, c.rope_theta), rotary(k, positions, c.rope_theta)
    q, k, v = (y.transpose(0, 2, 1, 3) for y in (q, k, v))            # [b, h, t, d]
    if cache is None:
      keys, values, key_pos = k, v, positions
    else:
      ck, cv = cache
      keys = jax.lax.dynamic_update_slice_in_dim(ck, k.astype(ck.dtype), positions[0], axis=2)
      values = jax.lax.dynamic_update_slice_in_dim(cv, v.astype(cv.dtype), positions[0], axis=2)
      cache = (keys, values)
      key_pos = jnp.arange(keys.shape[2])
    # Causal: position i attends to positions <= i (in the cache: nothing not yet written).
    mask = key_pos[None, :] <= positions[:, None]                      # [t, s]
    scores = jnp.einsum("bhtd,bhsd->bhts", q, keys.astype(q.dtype)).astype(jnp.float32)
    scores = jnp.where(mask, scores / jnp.sqrt(c.d_head).astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(c.dtype)
    out = jnp.einsum("bhts,bhsd->bthd", weights, values.astype(c.dtype))
    return _dense(c.d_model, c, "out")(out.reshape(b, t, c.d_model)), cache


class MLP(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    if c.mlp == "swiglu":
      h = nn.silu(_dense(c.d_ff, c, "gate")(x)) * _dense(c.d_ff, c, "up")(x)
    else:  # GPT-2's tanh-approximated GELU ("gelu_new")
      h = nn.gelu(_dense(c.d_ff, c, "up")(x), approximate=True)
    return _dense(c.d_model, c, "down")(h)


class Block(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, cache):
    h, cache = Attention(self.config, name="attn")(_norm(self.config, "norm_attn")(x),
                                                   positions, cache)
    x = x + h
    return x + MLP(self.config, name="mlp")(_norm(self.config, "norm_mlp")(x)), cache


class Transformer(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, start: jax.Array | int = 0, cache: Cache | None = None
               ) -> tuple[jax.Array, Cache | None]:
    """tokens [b, t] int at positions start..start+t-1 -> (logits [b, t, vocab] f32, cache)."""
    c = self.config
    chex.assert_rank(tokens, 2)
    positions = jnp.asarray(start, jnp.int32) + jnp.arange(tokens.shape[1], dtype=jnp.int32)
    embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02),
                     dtype=c.dtype, name="embed")
    x = embed(tokens)
    if c.positions == "learned":
      x = x + nn.Embed(c.max_len, c.d_model, embedding_init=nn.initializers.normal(0.01),
                       dtype=c.dtype, name="pos_embed")(positions)
    new_cache = []
    for i in range(c.num_layers):
      x, layer_cache = Block(c, name=f"block_{i}")(x, positions,
                                                   None if cache is None else cache[i])
      new_cache.append(layer_cache)
    x = _norm(c, "norm_final")(x)
    if c.tied:
      # nn.Embed.attend's product, with `dense_vjps.attend`'s table gradient.
      logits = dense_vjps.attend(*nn.dtypes.promote_dtype(x, embed.embedding, dtype=c.dtype))
    else:
      logits = nn.Dense(c.vocab_size, use_bias=False, dtype=c.dtype, name="head",
                        kernel_init=nn.initializers.normal(0.02))(x)
    return logits.astype(jnp.float32), (None if cache is None else tuple(new_cache))


def param_count(config: TransformerConfig) -> int:
  """Number of parameters, from shapes only (`jax.eval_shape`: nothing is allocated)."""
  shapes = jax.eval_shape(Transformer(config).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 1), jnp.int32))
  return sum(x.size for x in jax.tree.leaves(shapes))
