"""Molecular conformers as fixed-size padded rows (``config.data.source = "molecules"``).

A row is one conformer of one molecule, padded to ``A = data.max_atoms`` atoms:

    pos        [A, 3]  float32  coordinates in Angstrom, centred on the atoms' mean (the data)
    atom_mask  [A]     float32  1 for atoms, 0 for padding (the mask)
    atom_type  [A]     int32    atomic number (0: padding)
    edge_type  [A, A]  int8     0 none, 1-5 bond order codes, 6/7 atoms 2/3 bonds apart
    mol_id     []      int32    index of the molecule in its split's table

Rows come from `molecule_files.build_dataset` (RDKit ensembles of shipped drug-like
molecules by default, or GEOM): the ``train_conformers`` lowest-energy conformers of every
train molecule are the training rows (cycled where pruning left fewer, so every molecule
weighs the same), those of the val molecules the held-out rows of
``GenerativeModel.evaluate``; the test molecules' whole ensembles are the references of the
COV/MAT evaluator (evals/conformer_quality.py). Rows hold heavy atoms, or all atoms with
``hydrogens`` (as the molecule configs set; see BUILD_NOTES). Each replicate permutes the
training rows once and hands out disjoint blocks of them. ``task.aux["graphs"]`` holds the
training molecules' graphs (``atom_type``, ``edge_type``, ``atom_mask``, ``mol_id``, leading
axis ``[M]``): a model samples conformers for them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import validate
from collapse_jax.data import molecule_files
from collapse_jax.data import molecule_chemistry
from collapse_jax.data.molecule_chemistry import Dataset, Molecule, extend_order
from collapse_jax.data.source import RowSpec, Task

# Parameters of the dataset (the cache is keyed by them) and their defaults.
DEFAULTS = {"kind": "embedded", "path": None, "num_molecules": 1000, "num_confs": 30,
            "prune_rms": 0.5, "min_atoms": 15, "max_atoms": 40, "hydrogens": False,
            "split": (0.8, 0.1, 0.1), "seed": 0}
# Filter parameters added later: in the parameters (and the cache key) only when they filter,
# so the caches made before them keep their names.
FILTER_DEFAULTS = {"elements": molecule_chemistry.HEAVY_ELEMENTS, "max_heavy_atoms": 0}
GRAPH_FIELDS = ("atom_type", "edge_type", "atom_mask", "mol_id")


def default_cache_dir() -> str:
  """$COLLAPSE_JAX_MOLECULES, else ~/.cache/collapse_jax/molecules."""
  return os.environ.get("COLLAPSE_JAX_MOLECULES",
                        str(pathlib.Path.home() / ".cache" / "collapse_jax" / "molecules"))


def row_spec(max_atoms: int) -> RowSpec:
  a = max_atoms
  return RowSpec(fields={"pos": ((a, 3), "float32"), "atom_mask": ((a,), "float32"),
                         "atom_type": ((a,), "int32"), "edge_type": ((a, a), "int8"),
                         "mol_id": ((), "int32")},
                 data="pos", mask="atom_mask")


def graphs_of(mols: list[Molecule], a: int) -> dict[str, np.ndarray]:
  """Padded graph arrays of ``mols``, leading axis ``[M]``."""
  m = len(mols)
  out = {"atom_type": np.zeros((m, a), np.int32), "edge_type": np.zeros((m, a, a), np.int8),
         "atom_mask": np.zeros((m, a), np.float32), "mol_id": np.arange(m, dtype=np.int32)}
  for i, mol in enumerate(mols):
    n = len(mol.atoms)
    out["atom_type"][i, :n] = mol.atoms
    out["edge_type"][i, :n, :n] = extend_order(mol.bonds)
    out["atom_mask"][i, :n] = 1
  return out


def conformer_rows(mols: list[Molecule], a: int, per_molecule: int,
                   rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """``per_molecule`` rows per molecule, molecule by molecule: its lowest-energy conformers,
  cycled when pruning left fewer (every molecule weighs the same, and the row count is known
  from the molecule count); positions centred on the atoms' mean. ``rows=(lo, hi)``: only
  rows ``lo..hi`` of them (None: all)."""
  graphs = graphs_of(mols, a)
  lo, hi = rows or (0, len(mols) * per_molecule)
  # Row r is conformer r % per_molecule (cycled) of molecule r // per_molecule.
  take = [(r // per_molecule, r % per_molecule % len(mols[r // per_molecule].positions))
          for r in range(lo, hi)]
  mol_id = np.array([i for i, _ in take], np.int32)
  pos = np.zeros((len(take), a, 3), np.float32)
  for r, (i, c) in enumerate(take):
    x = mols[i].positions[c]
    pos[r, :len(x)] = x - x.mean(0)
  graph = {k: graphs[k][mol_id] for k in ("atom_type", "edge_type", "atom_mask")}
  return {"pos": pos, **graph, "mol_id": mol_id}


@functools.lru_cache(maxsize=4)
def _dataset(params_json: str, cache_dir: str, progress: bool) -> Dataset:
  return molecule_files.build_dataset(json.loads(params_json), cache_dir, progress)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoleculeSource:
  params: str          # JSON of the dataset parameters (DEFAULTS' keys)
  cache_dir: str
  train_conformers: int
  progress: bool = True

  @property
  def max_atoms(self) -> int:
    return json.loads(self.params)["max_atoms"]

  @property
  def dataset(self) -> Dataset:
    """The molecules (host side): built once, then read from the cache."""
    return _dataset(self.params, self.cache_dir, self.progress)

  @property
  def row_spec(self) -> RowSpec:
    return row_spec(self.max_atoms)

  @property
  def num_train(self) -> int:
    return self.train_conformers * len(self.dataset.splits["train"])

  def consts(self, rows: tuple[int, int] | None = None) -> dict:
    """Training rows (``rows=(lo, hi)``: only those, None: all), the val rows and the
    training molecules' graphs. The molecule table (the cache) is read whole; only the rows
    asked for are built."""
    splits, a = self.dataset.splits, self.max_atoms
    return {"train": conformer_rows(splits["train"], a, self.train_conformers, rows),
            "val": conformer_rows(splits["val"], a, self.train_conformers),
            "graphs": graphs_of(splits["train"], a)}

  def task(self, consts, key: jax.Array) -> Task:
    # The source's own row count: placed on a mesh, consts["train"] has padding rows.
    perm = jax.random.permutation(key, self.num_train)
    return Task(test=jax.tree.map(jnp.asarray, consts["val"]),
                aux={"perm": perm, "graphs": jax.tree.map(jnp.asarray, consts["graphs"])})

  def real(self, consts, task: Task, key: jax.Array, block: jax.Array, n: int):
    del key
    rows = jax.lax.dynamic_slice_in_dim(task.aux["perm"], block * n, n)
    return {k: jnp.asarray(v)[rows] for k, v in consts["train"].items()}


def params_of(data) -> dict:
  """The dataset parameters of a ``config.data`` (DEFAULTS where absent)."""
  p = {k: data.get(k, v) for k, v in DEFAULTS.items()}
  p["split"] = tuple(float(x) for x in p["split"])
  if p["path"] is not None:
    p["path"] = str(pathlib.Path(p["path"]).expanduser().resolve())
  elements = tuple(data.get("elements", None) or FILTER_DEFAULTS["elements"])
  if set(elements) != set(FILTER_DEFAULTS["elements"]):
    # In ELEMENTS' order, so the same set is the same cache.
    order = {e: i for i, e in enumerate(molecule_chemistry.ELEMENTS)}
    p["elements"] = tuple(sorted(set(elements), key=lambda e: order.get(e, len(order))))
  if data.get("max_heavy_atoms", 0):
    p["max_heavy_atoms"] = int(data.max_heavy_atoms)
  return p


def build(data) -> MoleculeSource:
  return MoleculeSource(params=json.dumps(params_of(data), sort_keys=True),
                        cache_dir=data.cache_dir or default_cache_dir(),
                        train_conformers=data.train_conformers,
                        progress=data.progress)


RANGES = {
    "num_molecules": validate.Range(0, integer=True, note="0: all"),
    "num_confs": validate.COUNT,
    "prune_rms": validate.NON_NEGATIVE,
    "min_atoms": validate.COUNT,
    "max_atoms": validate.COUNT,
    "seed": validate.SEED,
    "train_conformers": validate.COUNT,
    "max_heavy_atoms": validate.Range(0, integer=True, note="0: no cap"),
}


def check_config(config) -> str | None:
  """One sentence if ``config.data`` cannot describe a molecule dataset, else None."""
  d = config.data
  problem = validate.fields_problem(d, RANGES, "data.")
  if problem:
    return problem
  p = params_of(d)
  if p["kind"] not in molecule_files.KINDS:
    return (f"Unknown molecule data kind {p['kind']!r}; choose one of "
            f"{', '.join(molecule_files.KINDS)}.")
  if p["kind"] != "embedded":
    if not p["path"]:
      return f"Molecule data kind {p['kind']!r} needs data.path."
    if not pathlib.Path(p["path"]).exists():
      return f"Molecule data path {p['path']} does not exist."
  heavy = p.get("max_heavy_atoms", 0)
  elements = p.get("elements", FILTER_DEFAULTS["elements"])
  unknown = [e for e in elements if e not in molecule_chemistry.HEAVY_ELEMENTS]
  if unknown or not elements:
    return (f"data.elements must be heavy elements of "
            f"{', '.join(molecule_chemistry.HEAVY_ELEMENTS)}, got {tuple(elements)}.")
  if p["kind"] in ("geom_pickles", "geom_rdkit") and ("elements" in p or heavy):
    return ("data.elements and data.max_heavy_atoms filter the embedded, smiles and sdf "
            f"kinds only, not {p['kind']} (keep the defaults, or filter GEOM yourself).")
  # Most atoms a row of `heavy` heavy atoms can hold: 3 * heavy + 2 with hydrogens (an
  # alkane) where no element binds more than 4 atoms.
  most = (3 * heavy + 2 if p["hydrogens"] else heavy) if heavy else None
  if most is not None and p["min_atoms"] > most and set(elements) <= {
      "C", "N", "O", "F", "Cl", "Br", "I"}:
    return (f"data.min_atoms={p['min_atoms']} leaves no molecule of at most "
            f"data.max_heavy_atoms={heavy} heavy atoms, which have at most {most} "
            f"{'atoms with hydrogens' if p['hydrogens'] else 'heavy atoms'}.")
  if p["min_atoms"] > p["max_atoms"]:
    return (f"data.min_atoms must be at most data.max_atoms, got {p['min_atoms']} and "
            f"{p['max_atoms']}.")
  split = p["split"]
  if len(split) != 3 or not all(x > 0 for x in split) or not abs(sum(split) - 1) <= 1e-6:
    return f"data.split must be three positive train/val/test fractions summing to 1, got {split}."
  return None
