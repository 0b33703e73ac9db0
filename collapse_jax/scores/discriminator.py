"""A verifier trained each generation: a two-layer MLP told the real training set (the
pool's first n_real rows) from the candidates, ``curation.steps`` Adam steps on balanced
batches, inside the compiled loop. The score is its logit of "real": a verifier whose
quality grows with its budget (``steps``) and falls as the samples get closer to real."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

BATCH = 128


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.silu(nn.Dense(128)(x))
    h = nn.silu(nn.Dense(128)(h))
    return nn.Dense(1)(h)[:, 0]


@dataclasses.dataclass(frozen=True)
class Discriminator:
  field: str
  n_real: int
  steps: int

  def __call__(self, state, task, rows, key, pool):
    del state, task
    flat = lambda x: x.reshape(x.shape[0], -1).astype(jnp.float32)
    real = flat(pool.decode(jax.tree.map(lambda x: x[:self.n_real], pool.data))[self.field])
    fake = flat(rows[self.field])
    net, opt = _MLP(), optax.adam(1e-3)
    k_init, k_steps = jax.random.split(key)
    params = net.init(k_init, real[:1])
    labels = jnp.concatenate([jnp.ones(BATCH // 2), jnp.zeros(BATCH // 2)])

    def step(carry, k):
      params, opt_state = carry
      kr, kf = jax.random.split(k)
      x = jnp.concatenate([real[jax.random.randint(kr, (BATCH // 2,), 0, real.shape[0])],
                           fake[jax.random.randint(kf, (BATCH // 2,), 0, fake.shape[0])]])
      loss = lambda p: optax.sigmoid_binary_cross_entropy(net.apply(p, x), labels).mean()
      updates, opt_state = opt.update(jax.grad(loss)(params), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)),
                                  jax.random.split(k_steps, self.steps))
    return net.apply(params, fake)


def build(config, loop) -> Discriminator:
  return Discriminator(field=loop.source.row_spec.data, n_real=loop.layout.n_real,
                       steps=int(config.curation.steps))
