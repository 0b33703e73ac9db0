"""Molecules and their reference conformer ensembles: the `Molecule` and `Dataset` records
(with the split by molecule and the padding statistics), RDKit helpers (canonical atom order,
graph arrays, GeoDiff's order-extended edges), symmetry-aware RMSD, the molecule filter and
RDKit's ensembles. molecule_files.py reads datasets from files and caches them with these.

A dataset is three splits (train / val / test, split by molecule) of `Molecule` records: a
heavy-atom (or all-atom) graph in a fixed atom order and a conformer ensemble in that order.

Filter (`passes_filter`): one fragment, heavy elements in ``elements`` (default
``HEAVY_ELEMENTS``; hydrogen always allowed), at most ``max_heavy_atoms`` heavy atoms (0: no
cap; QM9's 9), ``min_atoms`` .. ``max_atoms`` atoms in a row (heavy atoms; all atoms with
``hydrogens``). Ensembles
(`embed_ensemble`): RDKit ETKDGv3 (seed per molecule, never 0: seed 0 returned identical
conformers) + MMFF94, pruned at ``prune_rms`` A heavy-atom RMSD, sorted by MMFF energy
(pruning is symmetry-aware, over the heavy-atom graph's automorphisms, like RDKit's
GetBestRMS).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from collapse_jax.errors import DataError

RECIPE = 2    # of how ensembles are made (2: symmetry-aware pruning); part of the cache key
ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
HEAVY_ELEMENTS = ELEMENTS[1:]    # the default of data.elements
QM9_ELEMENTS = ("C", "N", "O", "F")
SPLITS = ("train", "val", "test")

# Pair codes of the graph: bonds 1-5, then GeoDiff's order-extended edges (2 and 3 bonds apart).
SINGLE, DOUBLE, TRIPLE, AROMATIC, OTHER_BOND, HOP2, HOP3 = 1, 2, 3, 4, 5, 6, 7
NUM_EDGE_TYPES = 8


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Molecule:
  """One molecule: its graph and conformers in one atom order.

  Attributes:
    smiles: SMILES whose parse (hydrogens kept) gives exactly this atom order.
    atoms: ``[n]`` int atomic numbers.
    bonds: ``[n, n]`` int8 symmetric bond codes (0: no bond, SINGLE .. OTHER_BOND).
    positions: ``[c, n, 3]`` float32 conformers, in Angstrom, lowest energy first.
    energies: ``[c]`` float64 energies (MMFF kcal/mol or GEOM's), ascending; NaN if unknown.
  """
  smiles: str
  atoms: np.ndarray
  bonds: np.ndarray
  positions: np.ndarray
  energies: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Dataset:
  """The three splits and how they were made (``stats``: counts, sizes, padding cost)."""
  splits: dict[str, list[Molecule]]
  stats: dict[str, Any]


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
  """(train, val, test) counts of ``n`` molecules split by ``fractions``: val and test
  rounded and at least 1 each, train the rest."""
  n_val = max(1, round(fractions[1] * n))
  n_test = max(1, round(fractions[2] * n))
  return n - n_val - n_test, n_val, n_test


def split_by_molecule(mols: list[Molecule], fractions) -> dict[str, list[Molecule]]:
  """``mols`` cut in their order into the train, val and test splits of `split_counts`."""
  n_train, n_val, _ = split_counts(len(mols), tuple(fractions))
  return {"train": mols[:n_train], "val": mols[n_train:n_train + n_val],
          "test": mols[n_train + n_val:]}


def padding_stats(data: Dataset, max_atoms: int) -> dict[str, float]:
  """Atom counts and what padding every molecule to ``max_atoms`` costs."""
  n = np.array([len(m.atoms) for s in SPLITS for m in data.splits[s]], np.float64)
  return {"max_atoms": int(max_atoms), "largest_molecule": int(n.max()),
          "mean_atoms": float(n.mean()),
          "atom_padding_fraction": float(1 - n.mean() / max_atoms),
          # Dense [A, A] pair work relative to per-molecule n^2 pair work.
          "pair_cost_factor": float(max_atoms ** 2 / np.mean(n ** 2))}


def counts_text(d: dict[str, int]) -> str:
  """``{"size": 3, "duplicate": 0}`` as "3 size" (the counts above 0), or "none"."""
  return ", ".join(f"{v} {k}" for k, v in d.items() if v) or "none"


# ----------------------------------------------------------------------------------------
# RDKit helpers (imported lazily: RDKit takes a second to import).


def rdkit_chem():
  """RDKit's Chem module, its log silenced."""
  from rdkit import Chem, RDLogger
  RDLogger.DisableLog("rdApp.*")  # parse errors become our one-sentence errors
  return Chem


def canonical_order(mol):
  """``mol`` renumbered to its canonical SMILES' atom order, and that SMILES: parsing the
  SMILES (hydrogens kept) gives the atoms in the renumbered mol's order."""
  Chem = rdkit_chem()
  smiles = Chem.MolToSmiles(mol)
  order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",") if i]
  return Chem.RenumberAtoms(mol, order), smiles


def mol_from_smiles(smiles: str):
  """The RDKit molecule of a stored SMILES, hydrogens kept as written (array atom order)."""
  Chem = rdkit_chem()
  params = Chem.SmilesParserParams()
  params.removeHs = False
  return Chem.MolFromSmiles(smiles, params)


def write_sdf(molecules: list[Molecule], mol_ids: np.ndarray, positions: np.ndarray,
              path) -> None:
  """Conformers as an SDF file: conformer i is ``molecules[mol_ids[i]]`` (its graph, from
  its SMILES) at ``positions[i, :n]`` ``[N, A, 3]`` (Angstrom; padding atoms dropped),
  titled ``<SMILES> sample <i>``."""
  Chem = rdkit_chem()
  with Chem.SDWriter(str(path)) as writer:
    for i, (m, pos) in enumerate(zip(mol_ids, positions)):
      molecule = molecules[int(m)]
      mol = mol_from_smiles(molecule.smiles)
      conformer = Chem.Conformer(mol.GetNumAtoms())
      for atom, xyz in enumerate(np.asarray(pos, np.float64)[:len(molecule.atoms)]):
        conformer.SetAtomPosition(atom, xyz.tolist())
      mol.AddConformer(conformer, assignId=True)
      mol.SetProp("_Name", f"{molecule.smiles} sample {i}")
      writer.write(mol)


def graph_arrays(mol) -> tuple[np.ndarray, np.ndarray]:
  """(atomic numbers ``[n]``, bond codes ``[n, n]`` int8) of ``mol``."""
  bond_types = rdkit_chem().BondType
  codes = {bond_types.SINGLE: SINGLE, bond_types.DOUBLE: DOUBLE, bond_types.TRIPLE: TRIPLE,
           bond_types.AROMATIC: AROMATIC}
  n = mol.GetNumAtoms()
  atoms = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int32)
  bonds = np.zeros((n, n), np.int8)
  for b in mol.GetBonds():
    i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
    bonds[i, j] = bonds[j, i] = codes.get(b.GetBondType(), OTHER_BOND)
  return atoms, bonds


def extend_order(bonds: np.ndarray) -> np.ndarray:
  """``[..., n, n]`` bond codes -> edge codes with atoms 2 and 3 bonds apart marked HOP2 / HOP3
  (GeoDiff's ``edge_order = 3``); the diagonal stays 0."""
  adj = (bonds > 0).astype(np.int32)
  eye = np.eye(adj.shape[-1], dtype=np.int32)
  reach1 = np.minimum(adj + eye, 1)
  reach2 = np.minimum(reach1 @ reach1, 1)
  reach3 = np.minimum(reach2 @ reach1, 1)
  out = bonds.astype(np.int8).copy()
  out = np.where((out == 0) & (reach2 > 0) & (eye == 0), HOP2, out)
  out = np.where((out == 0) & (reach3 > 0) & (eye == 0), HOP3, out)
  return out.astype(np.int8)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
  """RMSD of ``a`` and ``b`` (``[n, 3]``) after optimal rigid superposition (no symmetry)."""
  a = a - a.mean(0)
  b = b - b.mean(0)
  u, s, vt = np.linalg.svd(a.T @ b)
  s[-1] *= np.sign(np.linalg.det(u @ vt))
  return float(np.sqrt(max(np.sum(a * a) + np.sum(b * b) - 2 * s.sum(), 0.0) / len(a)))


def symmetric_rmsd(a: np.ndarray, b: np.ndarray, matches: np.ndarray) -> float:
  """Best RMSD of ``a`` and ``b`` (``[n, 3]``) over rigid superpositions and the atom maps
  ``matches [k, n]`` (the molecule's automorphisms): what RDKit's GetBestRMS computes."""
  return min(kabsch_rmsd(a[m], b) for m in matches)


def automorphisms(mol, max_matches: int = 1000) -> np.ndarray:
  """``[k, n]`` atom maps of ``mol`` onto itself (the identity first)."""
  matches = mol.GetSubstructMatches(mol, uniquify=False, maxMatches=max_matches)
  return np.array(matches or [tuple(range(mol.GetNumAtoms()))], np.int64)


def _prune(positions: np.ndarray, matches: np.ndarray, threshold: float) -> list[int]:
  """Greedy in the given (energy) order: keep a conformer unless it lies within ``threshold``
  A symmetry-aware heavy-atom RMSD of one already kept (``positions``: heavy atoms)."""
  kept: list[int] = []
  for i in range(len(positions)):
    if all(symmetric_rmsd(positions[i], positions[k], matches) >= threshold for k in kept):
      kept.append(i)
  return kept


def passes_filter(mol, min_atoms: int, max_atoms: int, hydrogens: bool = False,
                  elements: tuple[str, ...] = HEAVY_ELEMENTS, max_heavy_atoms: int = 0
                  ) -> str | None:
  """Why ``mol`` is left out ("fragments", "elements", "size"), or None to keep it. Its heavy
  atoms must be of ``elements`` (hydrogen is always allowed) and at most ``max_heavy_atoms``
  (0: no cap); the size is the atoms its rows hold: heavy atoms, plus its hydrogens with
  ``hydrogens``."""
  Chem = rdkit_chem()
  if len(Chem.GetMolFrags(mol)) != 1:
    return "fragments"
  allowed = set(elements) | {"H"}
  if any(a.GetSymbol() not in allowed for a in mol.GetAtoms()):
    return "elements"
  if max_heavy_atoms and mol.GetNumHeavyAtoms() > max_heavy_atoms:
    return "size"
  n = Chem.AddHs(mol).GetNumAtoms() if hydrogens else mol.GetNumHeavyAtoms()
  return None if min_atoms <= n <= max_atoms else "size"


def filter_text(p: dict) -> str:
  """The filter of dataset parameters ``p`` in words."""
  elements = p.get("elements") or HEAVY_ELEMENTS
  heavy = f", at most {p['max_heavy_atoms']} heavy atoms" if p.get("max_heavy_atoms") else ""
  return (f"one fragment of {', '.join(('H',) + tuple(elements))} with {p['min_atoms']}-"
          f"{p['max_atoms']} {'' if p['hydrogens'] else 'heavy '}atoms{heavy}")


def molecule_from_rdmol(mol, positions: list[np.ndarray], energies: list[float],
                        hydrogens: bool) -> Molecule:
  """A Molecule from an RDKit molecule (any hydrogens) and conformers in its atom order."""
  Chem = rdkit_chem()
  pos = np.stack(positions).astype(np.float32)
  if not hydrogens:
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    pos = pos[:, heavy]
    mol = Chem.RemoveHs(mol, sanitize=False)  # keeps heavy atoms in their order
  mol = Chem.Mol(mol)
  mol.RemoveAllConformers()
  renumbered, smiles = canonical_order(mol)
  order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",") if i]
  pos = pos[:, order]
  energies_arr = np.asarray(energies, np.float64)
  by_energy = np.argsort(np.nan_to_num(energies_arr, nan=np.inf), kind="stable")
  atoms, bonds = graph_arrays(renumbered)
  return Molecule(smiles=smiles, atoms=atoms, bonds=bonds, positions=pos[by_energy],
                  energies=energies_arr[by_energy])


# ----------------------------------------------------------------------------------------
# Making ensembles with RDKit.


def embed_ensemble(mol, num_confs: int, seed: int, prune_rms: float, hydrogens: bool
                   ) -> Molecule | None:
  """ETKDGv3 + MMFF ensemble of ``mol`` (None if RDKit cannot embed or parametrise it).

  Conformers are embedded with hydrogens (ETKDG and MMFF need them), optimised, sorted by MMFF
  energy and pruned at ``prune_rms`` A heavy-atom RMSD; hydrogens are then dropped unless
  ``hydrogens``. ``seed`` must not be 0.
  """
  from rdkit.Chem import AllChem
  Chem = rdkit_chem()
  mol = Chem.RemoveHs(mol)
  if not hydrogens:
    mol, _ = canonical_order(mol)
  mol_h = Chem.AddHs(mol)
  if hydrogens:
    mol_h, _ = canonical_order(mol_h)
  params = AllChem.ETKDGv3()
  params.randomSeed = int(seed)
  params.pruneRmsThresh = prune_rms
  params.numThreads = 1
  if (not AllChem.EmbedMultipleConfs(mol_h, num_confs, params)
      or not AllChem.MMFFHasAllMoleculeParams(mol_h)):
    return None
  results = AllChem.MMFFOptimizeMoleculeConfs(mol_h, numThreads=1, maxIters=2000)
  energies = np.array([e for _, e in results], np.float64)
  pos = np.stack([c.GetPositions() for c in mol_h.GetConformers()]).astype(np.float32)
  order = np.argsort(energies, kind="stable")
  pos, energies = pos[order], energies[order]
  heavy_h = np.array([a.GetAtomicNum() > 1 for a in mol_h.GetAtoms()])
  # RemoveHs keeps the heavy atoms in their order, so its automorphisms index pos[:, heavy_h].
  keep = _prune(pos[:, heavy_h], automorphisms(Chem.RemoveHs(mol_h)), prune_rms)
  pos, energies = pos[keep], energies[keep]
  if not hydrogens:
    # AddHs appends hydrogens after the heavy atoms, so the first n rows are mol's atoms.
    pos = pos[:, :mol.GetNumAtoms()]
  graph_mol = mol_h if hydrogens else mol  # canonical_order made its SMILES' order the array's
  atoms, bonds = graph_arrays(graph_mol)
  return Molecule(smiles=Chem.MolToSmiles(graph_mol), atoms=atoms, bonds=bonds, positions=pos,
                  energies=energies)


def make_ensembles(mols: list, p: dict, progress: bool = True) -> Dataset:
  """Filters ``mols``, picks ``p['num_molecules']`` of them (by ``p['seed']``), embeds each
  and splits them by molecule into train/val/test (``p['split']`` fractions)."""
  Chem = rdkit_chem()
  skipped: dict[str, int] = {"fragments": 0, "elements": 0, "size": 0, "duplicate": 0,
                             "embedding": 0}
  seen, kept = set(), []
  for mol in mols:
    why = passes_filter(mol, p["min_atoms"], p["max_atoms"], p["hydrogens"],
                        tuple(p.get("elements") or HEAVY_ELEMENTS),
                        p.get("max_heavy_atoms") or 0)
    key = Chem.MolToSmiles(mol) if why is None else None
    if why is None and key in seen:
      why = "duplicate"
    if why:
      skipped[why] += 1
      continue
    seen.add(key)
    kept.append(mol)
  if not kept:
    raise DataError(
        f"No molecule is left after filtering to {filter_text(p)} "
        f"(skipped: {counts_text(skipped)}).")
  order = np.random.default_rng(p["seed"]).permutation(len(kept))
  want = p["num_molecules"] or len(kept)
  out: list[Molecule] = []
  from tqdm.auto import tqdm
  bar = tqdm(total=min(want, len(kept)), desc="RDKit conformer ensembles", disable=not progress)
  for rank, i in enumerate(order):
    if len(out) == want:
      break
    m = embed_ensemble(kept[i], p["num_confs"], seed=p["seed"] * 100_003 + rank + 1,
                       prune_rms=p["prune_rms"], hydrogens=p["hydrogens"])
    if m is None or len(m.positions) == 0:
      skipped["embedding"] += 1
      continue
    out.append(m)
    bar.update(1)
  bar.close()
  if len(out) < 3:
    raise DataError(f"Only {len(out)} molecules could be embedded; a train, val and "
                    "test split need at least 3.")
  return Dataset(splits=split_by_molecule(out, p["split"]), stats={"skipped": skipped})
