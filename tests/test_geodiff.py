"""GeoDiff's dual encoder (nets/dual_encoder.py, its pair layers' custom VJPs in
ops/graph_vjps.py) and process (generative/geodiff_process.py, built by models/geodiff.py):
equivariant per-atom vectors, permutation equivariance, padding that changes nothing."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from collapse_jax import presets
from collapse_jax.data import molecule_chemistry as chem
from collapse_jax.data import molecules
from collapse_jax.models import geodiff
from collapse_jax.nets.dual_encoder import DualEncoder
from collapse_jax.ops import graph_vjps

A, N_REAL = 12, 9
NET = DualEncoder(hidden=16, num_convs=2, num_convs_local=2, cutoff=4.0)


def _molecule(a: int = A, seed: int = 0) -> dict[str, jax.Array]:
  """One molecule of N_REAL atoms (a ring with a tail) padded to ``a`` atoms, garbage
  coordinates on the padding; a cutoff of 4 A leaves some pairs outside the radius graph."""
  full = _padded(seed)
  return {k: v[:, :a] if k != "edge_type" else v[:, :a, :a] for k, v in full.items()}


def _padded(seed: int) -> dict[str, jax.Array]:
  a = A
  rng = np.random.default_rng(seed)
  bonds = np.zeros((N_REAL, N_REAL), np.int8)
  for i in range(N_REAL - 1):
    bonds[i, i + 1] = bonds[i + 1, i] = chem.SINGLE if i % 2 else chem.AROMATIC
  bonds[0, 5] = bonds[5, 0] = chem.DOUBLE
  edge_type = np.zeros((a, a), np.int8)
  edge_type[:N_REAL, :N_REAL] = chem.extend_order(bonds)
  pos = rng.normal(size=(a, 3)).astype(np.float32) * 2.5
  mask = (np.arange(a) < N_REAL).astype(np.float32)
  atom_type = np.where(mask > 0, rng.choice([6, 7, 8], a), 0).astype(np.int32)
  return {"pos": jnp.asarray(pos)[None], "atom_type": jnp.asarray(atom_type)[None],
          "edge_type": jnp.asarray(edge_type)[None], "atom_mask": jnp.asarray(mask)[None]}


@pytest.fixture(scope="module")
def params():
  m = _molecule()
  return jax.jit(NET.init)(jax.random.PRNGKey(0), m["pos"], m["atom_type"], m["edge_type"],
                           m["atom_mask"])


@jax.jit
def _vectors(params, m):
  return NET.apply(params, m["pos"], m["atom_type"], m["edge_type"], m["atom_mask"],
                   method=NET.vectors)


def test_vectors_are_e3_equivariant(params):
  m = _molecule()
  local, glob = _vectors(params, m)
  assert float(jnp.abs(local).max()) > 1e-3 and float(jnp.abs(glob).max()) > 1e-3
  for seed in range(3):
    r = jnp.asarray(Rotation.random(random_state=seed).as_matrix(), jnp.float32)
    if seed == 2:
      r = -r  # a reflection: E(3), not only SE(3)
    moved = dict(m, pos=m["pos"] @ r.T + jnp.array([1.5, -3.0, 0.7]))
    local2, glob2 = _vectors(params, moved)
    np.testing.assert_allclose(local2, local @ r.T, atol=1e-4)
    np.testing.assert_allclose(glob2, glob @ r.T, atol=1e-4)


def test_vectors_are_permutation_equivariant(params):
  m = _molecule()
  perm = np.random.default_rng(1).permutation(A)
  permuted = {"pos": m["pos"][:, perm], "atom_type": m["atom_type"][:, perm],
              "atom_mask": m["atom_mask"][:, perm],
              "edge_type": m["edge_type"][:, perm][:, :, perm]}
  for a, b in zip(_vectors(params, m), _vectors(params, permuted)):
    np.testing.assert_allclose(b, a[:, perm], rtol=1e-5, atol=1e-5)


def test_padding_changes_nothing(params):
  small = _molecule(a=N_REAL)
  big = _molecule(a=A)  # same real atoms, 3 padded atoms at random coordinates
  np.testing.assert_array_equal(small["pos"], big["pos"][:, :N_REAL])
  for a, b in zip(_vectors(params, small), _vectors(params, big)):
    np.testing.assert_allclose(b[:, :N_REAL], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b[:, N_REAL:], 0.0)


def _model(hidden=8):
  c = ml_collections.ConfigDict({"train_from": "scratch", "model": {
      "name": "geodiff", "hidden_dim": hidden, "num_convs": 1,
      "num_convs_local": 1, "cutoff": 4.0, "smooth_conv": True, "num_timesteps": 1000,
      "beta_start": 1e-7, "beta_end": 9e-3, "sampler_steps": 10, "inference_batch_size": 2,
      "temperature": 1.0, "eval_seed": 0, "exact_nll": False,
      **presets.training(batch_size=2, steps=1, learning_rate=1e-3, ema_decay=0.0)}})
  assert geodiff.check_config(c, molecules.row_spec(A)) is None
  return geodiff.build(c, None, molecules.row_spec(A))


def test_objective_ignores_padding_and_samples_stay_on_real_atoms():
  """GeoDiff's loss and the sampler see only real atoms: padding coordinates and padding
  noise change neither the per-atom losses nor the sampled real coordinates."""
  model = _model()
  small, big = _molecule(a=N_REAL), _molecule(a=A)
  cond = lambda m: {k: m[k] for k in ("atom_type", "edge_type", "atom_mask")}
  p = jax.jit(model.network.init)(jax.random.PRNGKey(0), big["pos"], cond(big))
  net = model.net(p)
  noise = jax.random.normal(jax.random.PRNGKey(1), (1, A, 3))
  t = jnp.array([300])
  losses = jax.jit(lambda m, z: model.process.per_atom_losses(net, m["pos"], m["atom_mask"],
                                                              cond(m), t, z))
  lb = losses(big, noise)
  ls = losses(small, noise[:, :N_REAL])
  for a, b in zip(ls, lb):
    np.testing.assert_allclose(b[:, :N_REAL], a, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(b[:, N_REAL:], 0.0)
  pos = jax.jit(lambda z: model.process.sample(net, z, big["atom_mask"], cond(big),
                                              jax.random.PRNGKey(2)))(noise)
  assert pos.shape == (1, A, 3) and bool(jnp.isfinite(pos).all())
  np.testing.assert_array_equal(pos[:, N_REAL:], 0.0)
  np.testing.assert_allclose(pos[:, :N_REAL].mean(1), 0.0, atol=1e-3)  # centred


def test_a_strided_step_moves_no_further_than_one_of_geodiffs():
  """With saturated global vectors (+-1e4 on two atoms), each of the 10 strided steps drifts
  the atoms 0.01 sigma_i clip at most: what one of GeoDiff's 1,000 steps can. Unscaled, a
  stride-100 step moved them 100x that (BUILD_NOTES, "Molecules": exploded conformers)."""
  process = _model().process
  m = _molecule()
  cond = {k: m[k] for k in ("atom_type", "edge_type", "atom_mask")}
  kick = jnp.zeros((1, A, 3)).at[0, 0, 0].set(1e4).at[0, 1, 0].set(-1e4)

  def drift(glob):  # the same noise, with and without the global vectors
    net = lambda pos, t, c, train: jnp.stack([jnp.zeros_like(pos), glob], -1)
    return jax.jit(lambda z: process.sample(net, z, m["atom_mask"], cond,
                                            jax.random.PRNGKey(2)))(m["pos"])
  moved = drift(kick) - drift(jnp.zeros_like(kick))
  sigmas = np.exp(process.schedule.log_sigmas())
  ts = np.round(np.linspace(999, 0, process.sampler_steps)).astype(int)
  on = sigmas[ts][sigmas[ts] < process.global_start_sigma]
  bound = 0.01 * process.clip * on.sum()  # one GeoDiff step per strided step
  gap = float(moved[0, 0, 0] - moved[0, 1, 0])
  assert len(on) >= 3 and gap == pytest.approx(2 * bound, rel=1e-4)


def test_sigmoid_schedule_matches_geodiff():
  betas = _model().process.schedule.betas()
  assert betas.shape == (1000,) and np.all(np.diff(betas) > 0)
  span = 9e-3 - 1e-7
  np.testing.assert_allclose(betas[[0, -1]], [1e-7 + span / (1 + np.exp(6)),
                                              1e-7 + span / (1 + np.exp(-6))], rtol=1e-9)


def test_noise_bands_split_the_time_steps_at_their_sigmas():
  process = _model().process
  sigmas = np.exp(process.schedule.log_sigmas())
  bands = process.noise_bands()
  assert [b[0] for b in bands] == ["small", "mid", "large"]
  assert bands[0][1] == 0 and bands[-1][2] == 1000
  assert all(a[2] == b[1] for a, b in zip(bands, bands[1:]))  # contiguous, disjoint
  for (_, lo, hi), low, high in zip(bands, (0.0, 0.1, 1.0), (0.1, 1.0, np.inf)):
    assert hi > lo and np.all((sigmas[lo:hi] >= low) & (sigmas[lo:hi] < high))


@pytest.mark.parametrize("layer", ["edge_features", "cfconv", "gin_messages", "pair_heads"])
def test_hand_written_gradients_match_autodiff(layer):
  """The pair layers' custom VJPs (saved inputs, recomputation, hand-written gradients)
  give autodiff's cotangents for every input, weights, pair and node features alike."""
  rng = np.random.default_rng(0)
  n, a, h = 2, 7, 6
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  dense = lambda i, o, bias=True: (f32(i, o), f32(o) if bias else None)
  head = lambda: (dense(h, h), dense(h, h, bias=False), [dense(h, h // 2), dense(h // 2, 1)])
  args = {
      "edge_features": ([dense(1, h), dense(h, h)], f32(chem.NUM_EDGE_TYPES, h),
                        jnp.abs(f32(n, a, a)) * 3,
                        jnp.asarray(rng.integers(0, chem.NUM_EDGE_TYPES, (n, a, a)))),
      "cfconv": (dense(h, h), dense(h, h), f32(n, a, a, h),
                 jnp.asarray(rng.uniform(size=(n, a, a)), jnp.float32), f32(n, a, h)),
      "gin_messages": (f32(n, a, h), f32(n, a, a, h),
                       jnp.asarray(rng.uniform(size=(n, a, a)) < 0.5)),
      "pair_heads": ((head(), head()), (f32(n, a, h), f32(n, a, h)), f32(n, a, a, h)),
  }[layer]
  fn = getattr(graph_vjps, layer)
  ct = jax.tree.map(lambda o: f32(*o.shape), jax.eval_shape(fn, *args))
  floats = lambda tree: [x for x in jax.tree.leaves(tree) if x.dtype == jnp.float32]

  def value_and_cotangents(f):  # compiled whole, as training runs it
    def both(args, ct):
      out, vjp = jax.vjp(f, *args)
      return floats((out, vjp(ct)))
    return jax.jit(both)(args, ct)
  # fn.fun: the undecorated forward, by autodiff.
  for got, want in zip(value_and_cotangents(fn), value_and_cotangents(fn.fun), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))
