"""GeoDiff's process (Xu et al., ICLR 2022): its objective, test losses and Langevin sampler
over 3-D conformers, a core `family.Process` beside processes.py's DDPM, EDM and flow
matching, for models/geodiff.py's family. Inputs ``x [n, A, 3]`` are padded molecules'
positions with ``mask [n, A]`` marking real atoms; ``cond`` holds their graphs (``atom_type``,
``edge_type``, ``atom_mask``), which the network (nets/dual_encoder.py) reads. Padding gets
no noise, loss or weight.

Process (GeoDiff's ``type: diffusion``): the core's DDPM schedule with ``num_timesteps``
(1000) sigmoid betas ``beta_start .. beta_end`` (1e-7 .. 9e-3, Gerstgrasser et al.'s fork),
used in GeoDiff's variance-exploding form x_t = x_0 + sigma_t z, sigma_t^2 = (1 - abar_t) /
abar_t. The network returns per-atom (local, global) vectors ``[n, A, 3, 2]``.

Objective (GeoDiff's ``get_loss_diffusion``), per atom: the pair target (d_0 - d_t) /
sigma_t goes through the same distance gradient (`eq_transform`) as the network's pair
scores, on the same edges, and

    local  = 5 |local vectors - local targets|^2    on pairs <= 3 bonds apart
    global = 2 |global vectors - global targets|^2  on other pairs within the cutoff

Training minimises (local + global) averaged over the batch's real atoms (GeoDiff's node
mean, as a (sum, weight) pair), at time steps drawn antithetically (t and T-1-t, as
GeoDiff). The test losses: ``test_loss`` (the local term, the one Gerstgrasser et al. plot)
and ``test_loss_global``, per real atom, at time steps uniform over all T with noise from a
fixed key (``eval_repeats`` draws per conformer), so every generation is scored on the same
noisy inputs. Also the local loss in three noise bands, ``test_loss_{small,mid,large}_noise``
(sigma_t below 0.1 A, 0.1-1 A, above 1 A; one more fixed draw per band): collapse shows
first in the small band, where a conformer's exact bond lengths and angles decide the
target (BUILD_NOTES, "Molecules").

Sampler: GeoDiff's Langevin dynamics (``sampling_type = 'ld'``): from sigma_T z, for each
time step i from T-1 down to 0, step = step_lr (sigma_i / 0.01)^2, x += step eps / sigma_i +
sqrt(2 step) z, eps = local vectors + ``w_global`` x global vectors (norm-clipped at
``clip``) once sigma_i < ``global_start_sigma``, then re-centred. The local vectors are
norm-clipped at ``clip_local`` (20): GeoDiff's test.py retries a sampling that went NaN
with exactly this clip; a compiled run cannot retry, so it is always on (``None``: off).
With ``sampler_steps < T`` the steps are evenly strided and each is ``stride = T /
sampler_steps`` times longer (the same Langevin time), its global vectors clipped at
``clip / stride``, so that no strided step moves an atom further than one of GeoDiff's steps
can (at GeoDiff's step_lr, 0.01 sigma_i clip). Why: the global vectors switch on abruptly at
``global_start_sigma``, on conformers that the local vectors alone have left compact, and
predict repulsions of norm up to ~1e4 there; GeoDiff's steps apply them gradually, but a
stride-20 step at clip 1000 threw atoms ~100 A out of half the conformers (BUILD_NOTES,
"Molecules"). ``sampler_steps = T`` is GeoDiff's sampler exactly.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax.generative.processes import DDPM
from collapse_jax.generative.rows import map_chunks, normal_like
from collapse_jax.nets.dual_encoder import distances, edge_sets, eq_transform, pair_mask

LOCAL_WEIGHT, GLOBAL_WEIGHT = 5.0, 2.0  # GeoDiff's loss weights
# Noise bands of the local test loss, by sigma_t in Angstrom: below 0.1 (bond lengths and
# angles decide the target), 0.1-1 (local structure), above 1 (the global fold).
NOISE_BANDS, BAND_EDGES = ("small", "mid", "large"), (0.1, 1.0)


def _center(pos: jax.Array, mask: jax.Array) -> jax.Array:
  """Subtracts the mean over real atoms; padding stays 0. ``pos [n, A, 3]``, ``mask [n, A]``."""
  m = mask[..., None]
  mean = jnp.sum(pos * m, -2, keepdims=True) / jnp.maximum(jnp.sum(m, -2, keepdims=True), 1)
  return (pos - mean) * m


def _clip_norm(v: jax.Array, limit: float) -> jax.Array:
  """GeoDiff's clip_norm: per-atom vectors ``[..., 3]`` scaled down to norm ``limit``."""
  norm = jnp.sqrt(jnp.sum(v * v, -1, keepdims=True))
  return v * jnp.where(norm > limit, limit / jnp.maximum(norm, 1e-12), 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeoDiffProcess:
  """GeoDiff's objective and Langevin sampler on the core's sigmoid DDPM schedule (a core
  `family.Process`; see the module docstring). ``net(x [n, A, 3], t [n], cond, key)`` gives
  the (local, global) vectors ``[n, A, 3, 2]``."""
  schedule: DDPM
  cutoff: float = 10.0
  sampler_steps: int = 1000
  step_lr: float = 1e-6
  w_global: float = 1.0
  global_start_sigma: float = 0.5
  clip: float = 1000.0
  clip_local: float | None = 20.0
  eval_repeats: int = 1

  def sigmas(self) -> jax.Array:
    """``[T]`` float32 sigma_t = sqrt((1 - abar_t) / abar_t), GeoDiff's noise scale."""
    return jnp.asarray(np.exp(self.schedule.log_sigmas()), jnp.float32)

  def per_atom_losses(self, net, x, mask, cond, t, noise) -> tuple[jax.Array, jax.Array]:
    """GeoDiff's weighted (local, global) squared errors ``[b, A]`` (0 on padding) of clean
    ``x [b, A, 3]`` perturbed at time steps ``t [b]`` by unit ``noise`` (0 on padding)."""
    sigma = self.sigmas()[t][:, None, None]
    x_t = x + noise * sigma
    vectors = net(x_t, t.astype(jnp.float32), cond, None)
    d_t, local, glob = edge_sets(x_t, cond["edge_type"], mask, self.cutoff)
    target = (distances(x, pair_mask(mask)) - d_t) / sigma
    err_local = vectors[..., 0] - eq_transform(target, x_t, d_t, local)
    err_global = vectors[..., 1] - eq_transform(target, x_t, d_t, glob)
    return (LOCAL_WEIGHT * jnp.sum(err_local ** 2, -1) * mask,
            GLOBAL_WEIGHT * jnp.sum(err_global ** 2, -1) * mask)

  def train_loss(self, net, x, mask, cond, key) -> tuple[jax.Array, jax.Array]:
    """(sum of local + global over the batch's real atoms, their number)."""
    b = x.shape[0]
    k_t, k_noise = jax.random.split(key)
    half = jax.random.randint(k_t, (b // 2 + 1,), 0, self.schedule.num_timesteps)
    t = jnp.concatenate([half, self.schedule.num_timesteps - 1 - half])[:b]
    local, glob = self.per_atom_losses(net, x, mask, cond, t, normal_like(k_noise, x.shape, mask))
    return jnp.sum(local + glob), jnp.sum(mask)

  def noise_bands(self) -> list[tuple[str, int, int]]:
    """(name, first t, end t) of the non-empty `NOISE_BANDS`: time-step ranges by sigma_t."""
    edges = [0, *np.searchsorted(np.exp(self.schedule.log_sigmas()), BAND_EDGES),
             self.schedule.num_timesteps]
    return [(name, int(lo), int(hi)) for name, lo, hi in zip(NOISE_BANDS, edges, edges[1:])
            if hi > lo]

  def summed_losses(self, net, x, mask, cond, t, noise, chunk: int) -> tuple[jax.Array, ...]:
    """(local, global) loss of ``x [n, A, 3]`` at time steps ``t [n]`` with ``noise``, each
    summed over the real atoms, in blocks of ``chunk`` conformers."""
    sums = map_chunks(
        lambda _, rows: tuple(jnp.sum(v, -1) for v in self.per_atom_losses(net, *rows)),
        (x, mask, cond, t, noise), x.shape[0], chunk)
    return tuple(jnp.sum(s) for s in sums)

  def test_losses(self, net, x, mask, cond, key, chunk: int) -> dict[str, jax.Array]:
    """Losses per real atom of ``x [n, A, 3]``: ``test_loss`` (local) and
    ``test_loss_global`` averaged over ``eval_repeats`` fixed draws of time step (uniform
    over all T) and noise from ``key``, and the local loss in each noise band (one more
    fixed draw per band, time steps uniform within it)."""
    n = x.shape[0]

    def draw(r, lo, hi):
      t = jax.random.randint(jax.random.fold_in(key, 2 * r), (n,), lo, hi)
      noise = normal_like(jax.random.fold_in(key, 2 * r + 1), x.shape, mask)
      return self.summed_losses(net, x, mask, cond, t, noise, chunk)

    T = self.schedule.num_timesteps
    local, glob = jax.lax.map(lambda r: draw(r, 0, T), jnp.arange(self.eval_repeats))
    atoms = jnp.sum(mask)
    out = {"test_loss": jnp.sum(local) / (self.eval_repeats * atoms),
           "test_loss_global": jnp.sum(glob) / (self.eval_repeats * atoms)}
    for b, (name, lo, hi) in enumerate(self.noise_bands()):
      out[f"test_loss_{name}_noise"] = draw(self.eval_repeats + b, lo, hi)[0] / atoms
    return out

  def test_loss(self, net, x, mask, cond, key, chunk: int) -> jax.Array:
    return self.test_losses(net, x, mask, cond, key, chunk)["test_loss"]

  def local_loss_by_step(self, net, x, mask, cond, ts, key, chunk: int) -> jax.Array:
    """``[len(ts)]`` local loss per real atom of ``x [n, A, 3]`` with every conformer at
    time step ``ts[i]`` (noise from ``fold_in(key, ts[i])``): the test loss as a curve over
    sigma_t (launch/loss_by_noise.py), which shows at which noise scales a generation lost
    precision."""
    def at(t):
      noise = normal_like(jax.random.fold_in(key, t), x.shape, mask)
      t = jnp.full(x.shape[:1], t, jnp.int32)
      return self.summed_losses(net, x, mask, cond, t, noise, chunk)[0] / jnp.sum(mask)

    return jax.lax.map(at, jnp.asarray(ts, jnp.int32))

  def sample(self, net, noise, mask, cond, key):
    sigmas = self.sigmas()
    T = self.schedule.num_timesteps
    ts = self.schedule.timesteps(self.sampler_steps)
    stride = T / self.sampler_steps

    def step(pos, inputs):
      i, t = inputs
      vectors = net(pos, jnp.full(pos.shape[:1], t, jnp.float32), cond, None)
      eps = vectors[..., 0]
      if self.clip_local is not None:
        eps = _clip_norm(eps, self.clip_local)
      sigma = sigmas[t]
      glob = _clip_norm(vectors[..., 1], self.clip / stride)  # see the module docstring
      eps = eps + jnp.where(sigma < self.global_start_sigma, self.w_global, 0.0) * glob
      size = self.step_lr * (sigma / 0.01) ** 2 * stride
      z = normal_like(jax.random.fold_in(key, i), pos.shape, mask)
      return _center(pos + size * eps / sigma + z * jnp.sqrt(2 * size), mask), None

    pos, _ = jax.lax.scan(step, noise * sigmas[-1], (jnp.arange(len(ts)), jnp.asarray(ts)))
    return pos

  def probability_flow(self, net):
    raise NotImplementedError("GeoDiff's Langevin sampler has no probability-flow ODE.")
