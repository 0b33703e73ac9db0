"""Evaluator ``conformer_quality``: COV / MAT of generated conformers against reference
ensembles (GeoDiff's protocol), for the geodiff family on molecule rows.

``config.evals.<name> = {"type": "conformer_quality", "num_molecules": 0, "max_refs": 0,
"ratio": 2}``. Each generation, every seed's fitted model samples ``ratio`` conformers per
reference conformer for the first ``num_molecules`` test molecules (0: all; ``max_refs`` > 0
keeps each molecule's lowest-energy references only), with the model's own ``sample`` (its
``task.aux["graphs"]`` swapped for these molecules' graphs, each row drawn once) and a key
``rng.stream_key(root, "conformer_eval", generation)``.
RMSD is RDKit's symmetry-aware ``GetBestRMS`` on heavy atoms. Per molecule, with D[r, g]
the RMSD of reference r and generated g:

    COV-R = frac of r with min_g D <= delta     MAT-R = mean_r min_g D
    COV-P = frac of g with min_r D <= delta     MAT-P = mean_g min_r D

averaged over molecules (GeoDiff reports the mean and median; the mean here): ``cov_r``,
``mat_r``, ``cov_p``, ``mat_p`` at delta = 1.25 A (Drugs), ``cov_r_075`` / ``cov_p_075`` at
0.75 A (MAT does not depend on delta). ``sanitize_frac``: the fraction of generated
conformers whose geometry gives back the input bond graph: finite coordinates, RDKit's
distance-based connectivity (``rdDetermineBonds.DetermineConnectivity``, covalent radii
x 1.3) equal to the input bonds, and the input molecule sanitising with those coordinates.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from collapse_jax import rng, validate
from collapse_jax.data.molecule_chemistry import mol_from_smiles
from collapse_jax.data.molecules import graphs_of
from collapse_jax.data.source import Task
from collapse_jax.evals.base import Context

THRESHOLDS = {"": 1.25, "_075": 0.75}


def _mol_with_conformers(smiles: str, positions: np.ndarray):
  """The heavy-atom RDKit molecule of ``smiles`` holding ``positions [c, n, 3]`` (n: atoms of
  the stored order) as conformers 0..c-1; hydrogens, if stored, are dropped."""
  from rdkit import Chem
  from rdkit.Geometry import Point3D
  mol = Chem.Mol(mol_from_smiles(smiles))
  for x in positions:
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(np.asarray(x, np.float64)):
      conf.SetAtomPosition(i, Point3D(*p))
    mol.AddConformer(conf, assignId=True)
  return Chem.RemoveHs(mol) if any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) else mol


def rmsd_matrix(smiles: str, refs: np.ndarray, gens: np.ndarray) -> np.ndarray:
  """``[R, G]`` RDKit GetBestRMS (symmetry-aware, heavy atoms) of ``refs [R, n, 3]`` against
  ``gens [G, n, 3]``; non-finite generated conformers get +inf."""
  from rdkit.Chem import rdMolAlign
  ref_mol = _mol_with_conformers(smiles, refs)
  ok = np.isfinite(gens).all(axis=(1, 2))
  gen_mol = _mol_with_conformers(smiles, np.where(ok[:, None, None], gens, 0.0))
  out = np.full((len(refs), len(gens)), np.inf)
  for g in np.flatnonzero(ok):
    for r in range(len(refs)):
      out[r, g] = rdMolAlign.GetBestRMS(gen_mol, ref_mol, int(g), r)
  return out


def cov_mat(d: np.ndarray, threshold: float) -> dict[str, float]:
  """COV-R/MAT-R/COV-P/MAT-P of one molecule's ``[R, G]`` RMSD matrix."""
  ref_min, gen_min = d.min(1), d.min(0)
  return {"cov_r": float(np.mean(ref_min <= threshold)), "mat_r": float(np.mean(ref_min)),
          "cov_p": float(np.mean(gen_min <= threshold)), "mat_p": float(np.mean(gen_min))}


def sanitizes(smiles: str, pos: np.ndarray) -> bool:
  """Whether conformer ``pos [n, 3]`` gives back the bond graph of ``smiles`` (see the
  module docstring)."""
  from rdkit import Chem
  from rdkit.Chem import rdDetermineBonds
  if not np.isfinite(pos).all():
    return False
  mol = _mol_with_conformers(smiles, pos[None])
  bare = Chem.RWMol()
  for a in mol.GetAtoms():
    bare.AddAtom(Chem.Atom(a.GetAtomicNum()))
  bare.AddConformer(Chem.Conformer(mol.GetConformer()), assignId=True)
  try:
    rdDetermineBonds.DetermineConnectivity(bare)
  except (RuntimeError, ValueError):
    return False
  bonds = lambda m: {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
                     for b in m.GetBonds()}
  if bonds(bare) != bonds(mol):
    return False
  return Chem.SanitizeMol(Chem.Mol(mol), catchErrors=True) == Chem.SanitizeFlags.SANITIZE_NONE


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ConformerQuality:
  """COV / MAT and ``sanitize_frac`` of each seed's samples for the test molecules (see the
  module docstring)."""
  molecules: list                      # test Molecules evaluated
  refs: list[np.ndarray]               # per molecule [R, n, 3]
  graphs: dict[str, np.ndarray]        # per generated row [G, ...]; mol_id: its molecule
  generate: Any                        # jitted (state, task, key) -> G sampled rows

  def __call__(self, states, tasks, roots, generation: int) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for s in range(len(roots)):
      state = jax.tree.map(lambda x: x[s], states)
      task = Task(test=jax.tree.map(lambda x: x[s], tasks.test), aux={"graphs": self.graphs})
      key = rng.stream_key(roots[s], "conformer_eval", generation)
      rows = jax.device_get(self.generate(state, task, key))
      for k, v in self.score(rows["pos"], rows["mol_id"]).items():
        out.setdefault(k, []).append(v)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}

  def score(self, pos: np.ndarray, owner: np.ndarray) -> dict[str, float]:
    """Metrics of generated positions ``[G, A, 3]`` of molecules ``owner [G]``."""
    per_mol: dict[str, list[float]] = {}
    ok = []
    for i, mol in enumerate(self.molecules):
      gens = pos[owner == i][:, :len(mol.atoms)]
      d = rmsd_matrix(mol.smiles, self.refs[i], gens)
      for suffix, thr in THRESHOLDS.items():
        for k, v in cov_mat(d, thr).items():
          if suffix and k.startswith("mat"):
            continue  # MAT does not depend on the threshold
          per_mol.setdefault(k + suffix, []).append(v)
      ok += [sanitizes(mol.smiles, g) for g in gens]
    return {k: float(np.mean(v)) for k, v in per_mol.items()} | {
        "sanitize_frac": float(np.mean(ok))}


def build(options, context: Context) -> ConformerQuality:
  loop = context.loop
  mols = loop.source.dataset.splits["test"][:options["num_molecules"] or None]
  refs = [m.positions[:options["max_refs"] or None] for m in mols]
  ratio = options["ratio"]
  owner = np.concatenate([np.full(ratio * len(r), i, np.int32) for i, r in enumerate(refs)])
  table = graphs_of(mols, loop.source.max_atoms)  # mol_id = index among these molecules
  graphs = {k: jax.numpy.asarray(v[owner]) for k, v in table.items()}
  model, num = loop.model, len(owner)
  generate = jax.jit(lambda state, task, key: model.sample(state, task, key, num))
  return ConformerQuality(molecules=mols, refs=refs, graphs=graphs, generate=generate)


OPTIONS = ("type", "num_molecules", "max_refs", "ratio")
RANGES = {
    "ratio": validate.COUNT,
    "num_molecules": validate.Range(0, integer=True, note="0: every test molecule"),
    "max_refs": validate.Range(0, integer=True, note="0: every reference conformer"),
}


def check_config(options, config, spec) -> str | None:
  if "edge_type" not in spec.fields or config.model.name != "geodiff":
    return ("The conformer_quality evaluator needs molecule rows (data.source = 'molecules') "
            "and model.name = 'geodiff'.")
  return validate.fields_problem(options, RANGES, "conformer_quality ")
