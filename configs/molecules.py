"""GeoDiff (dual-encoder conformer diffusion) retrained from scratch each generation on its
own conformers: Gerstgrasser et al.'s third modality (RESEARCH.md section 5).

Reference settings (the default): GeoDiff's dual encoder at hidden 128 (6 SchNet, 4 GIN
layers, cutoff 10 A), 1,000 steps of sigmoid betas 1e-7 .. 9e-3, trained from scratch for
41,000 steps per generation at batch 32 with Adam (lr 1e-3, betas 0.95/0.999, gradient clip
30,000; GeoDiff's plateau decay of the learning rate is not reproduced and it keeps no EMA),
GeoDiff's Langevin sampler over all 1,000 steps, synthetic conformers 2x the real ones per
training molecule, 6 generations. Data: the embedded drug-like molecules (1,000 molecules,
ensembles of up to 30 ETKDG+MMFF conformers), with their hydrogens like GEOM-Drugs rows:
30-80 atoms, about the 15-40 heavy atoms of GEOM-Drugs; 5 lowest-energy conformers per
train/val molecule; COV/MAT (on heavy atoms) on 30 test molecules' whole ensembles each
generation (BUILD_NOTES, "Molecules").

Data: GEOM-Drugs instead via data.kind/data.path; ensembles are cached in data.cache_dir
(default $COLLAPSE_JAX_MOLECULES).

size=qm9: GeoDiff's other benchmark at QM9's size: molecules of at most 9 heavy atoms of
C, N, O, F with their hydrogens (rows of 10-29 atoms), every such molecule the embedded set
holds (400 of the 413 that pass: RDKit's NCI set, 4 ChEMBL samples), ensembles pruned at 0.25 A;
GeoDiff's QM9 settings: 5,000 steps of sigmoid betas 1e-7 .. 2e-3, batch 64, gradient clip
10,000, the Langevin sampler over all 5,000 steps. COV/MAT stay at 1.25 / 0.75 A (GeoDiff
reports QM9 at 0.5 A; evals/conformer_quality.py fixes the thresholds).

Variants (comma-separated): a policy (default accumulate), lambda=<mix lambda> (policy mix),
size=drugs|qm9 (default drugs), cpu (drugs: a few hundred molecules of 15-45 atoms, a small
network, 200 Langevin steps: the CPU-sized effect run; qm9: the same network on rows of
10-29 atoms, 250 Langevin steps, 20,000 training steps), smoke (seconds: a handful of
molecules; heavy atoms only for drugs). E.g. configs/molecules.py:replace,cpu or
configs/molecules.py:size=qm9,cpu,replace.
"""
from __future__ import annotations

import ml_collections

from collapse_jax import presets
from collapse_jax.data import molecule_chemistry


def _n_rows(num_molecules: int, split, per_molecule: int) -> int:
  """Training rows of an embedded set: every train molecule contributes ``per_molecule``."""
  return per_molecule * molecule_chemistry.split_counts(num_molecules, tuple(split))[0]


def get_config(arg=None):
  v = presets.variant(arg, flags=("smoke", "cpu"), choices={"size": ("drugs", "qm9")})
  qm9 = v["size"] == "qm9"
  c = presets.base(v["policy"], v["mix_lambda"])
  c.num_generations = 6
  c.generations_per_chunk = 1
  c.data = ml_collections.ConfigDict({
      "source": "molecules", "kind": "embedded",
      # Typed placeholders, so --config.data.path=... works on the command line.
      "path": ml_collections.config_dict.placeholder(str),
      "cache_dir": ml_collections.config_dict.placeholder(str),
      "num_molecules": 1000, "num_confs": 30, "prune_rms": 0.5, "min_atoms": 30,
      "max_atoms": 80, "hydrogens": True, "split": (0.8, 0.1, 0.1), "seed": 0,
      # Heavy elements allowed (hydrogen always is) and a heavy-atom cap (0: none).
      "elements": molecule_chemistry.HEAVY_ELEMENTS, "max_heavy_atoms": 0,
      "train_conformers": 5, "progress": True})
  c.model = ml_collections.ConfigDict({
      "name": "geodiff", "hidden_dim": 128, "num_convs": 6,
      "num_convs_local": 4, "cutoff": 10.0, "smooth_conv": True, "num_timesteps": 1000,
      "beta_start": 1e-7, "beta_end": 9e-3, "sampler_steps": 1000, "step_lr": 1e-6,
      "w_global": 1.0, "global_start_sigma": 0.5, "clip": 1000.0, "clip_local": 20.0,
      "eval_repeats": 4, "inference_batch_size": 256, "temperature": 1.0, "eval_seed": 0,
      "exact_nll": False,
      **presets.training(batch_size=32, steps=41_000, learning_rate=1e-3, b1=0.95, b2=0.999,
                         grad_clip=30_000.0, ema_decay=0.0)})
  c.evals = ml_collections.ConfigDict(
      {"quality": {"type": "conformer_quality", "num_molecules": 30, "max_refs": 0,
                   "ratio": 2}})
  if qm9:
    c.data.update({"num_molecules": 400, "num_confs": 30, "prune_rms": 0.25, "min_atoms": 10,
                   "max_atoms": 29, "elements": molecule_chemistry.QM9_ELEMENTS,
                   "max_heavy_atoms": 9})
    c.model.update({"num_timesteps": 5000, "beta_end": 2e-3, "sampler_steps": 5000,
                    "batch_size": 64, "grad_clip": 10_000.0})
  if v["cpu"] and qm9:
    # Rows padded to 29 atoms hold (45 / 29)^2 = 2.4x less dense pair work than :cpu's 45:
    # :cpu's network, 3.3x its steps (about 25 minutes on one CPU core).
    c.num_generations = 4
    c.model.update({"hidden_dim": 32, "num_convs": 2, "num_convs_local": 2, "steps": 20_000,
                    "batch_size": 16, "sampler_steps": 250, "eval_repeats": 2,
                    "inference_batch_size": 128, "ema_decay": 0.999})
    c.evals.quality.update({"num_molecules": 10, "max_refs": 5})
  if v["cpu"] and not qm9:
    c.num_generations = 4
    c.data.update({"num_molecules": 250, "num_confs": 10, "min_atoms": 15, "max_atoms": 45})
    c.model.update({"hidden_dim": 32, "num_convs": 2, "num_convs_local": 2, "steps": 6000,
                    "batch_size": 16, "sampler_steps": 200, "eval_repeats": 2,
                    "inference_batch_size": 128, "ema_decay": 0.999})
    c.evals.quality.update({"num_molecules": 10, "max_refs": 5})
  if v["smoke"]:
    c.num_generations = 2
    c.data.update({"num_molecules": 6, "num_confs": 3, "min_atoms": 15, "max_atoms": 16,
                   "hydrogens": False, "train_conformers": 2, "progress": False})
    if qm9:  # small molecules with their hydrogens, a short schedule
      c.data.update({"min_atoms": 10, "max_atoms": 20, "hydrogens": True})
      c.model.update({"num_timesteps": 100})
    c.model.update({"hidden_dim": 8, "num_convs": 1, "num_convs_local": 1, "steps": 2,
                    "batch_size": 4, "sampler_steps": 10, "eval_repeats": 1,
                    "inference_batch_size": 16})
    c.evals.quality.update({"num_molecules": 1, "max_refs": 2})
  c.n_real = _n_rows(c.data.num_molecules, c.data.split, c.data.train_conformers)
  # Gerstgrasser et al. sample 2x the reference conformers of each training molecule.
  c.n_synth = 2 * c.n_real
  return c
