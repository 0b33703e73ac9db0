"""Molecule data (data/molecule_chemistry.py, data/molecule_files.py, data/molecules.py),
COV/MAT (evals/conformer_quality.py) and the molecule configs' resume: RDKit ensembles, GEOM
loaders on stand-ins in the real formats, the cache, bad input, RMSD equal to RDKit's
GetBestRMS."""
import json
import pickle
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from collapse_jax import experiment, inference
from collapse_jax.data import molecule_chemistry as chem
from collapse_jax.data import molecule_files as mol_files
from collapse_jax.data import molecules
from collapse_jax.evals import conformer_quality
from collapse_jax.report import noise_curves

import launcher_batch
from conftest import ROOT, load_config, read_metrics

# Small drug-like heavy-atom graphs; tert-butanol's three methyls are symmetric.
SMILES = ("CC(C)(C)O", "OC(=O)c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)C(=O)c1ccccc1")


@pytest.fixture(scope="module")
def ensembles() -> list[chem.Molecule]:
  """ETKDG+MMFF ensembles of SMILES (a few conformers each, made once)."""
  mols = [chem.embed_ensemble(Chem.MolFromSmiles(s), 4, seed=7 + i, prune_rms=0.1,
                              hydrogens=False) for i, s in enumerate(SMILES)]
  assert all(m is not None for m in mols)
  return mols


def _params(**kw) -> dict:
  return dict(molecules.DEFAULTS, **kw)


def test_ensembles_follow_the_smiles_order_and_energy(ensembles):
  for m in ensembles:
    parsed = chem.mol_from_smiles(m.smiles)
    assert [a.GetAtomicNum() for a in parsed.GetAtoms()] == list(m.atoms)
    assert all(a.GetAtomicNum() > 1 for a in parsed.GetAtoms())  # heavy atoms only
    bonds = np.zeros_like(m.bonds)
    for b in parsed.GetBonds():
      bonds[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] = 1
    np.testing.assert_array_equal(bonds | bonds.T, (m.bonds > 0).astype(np.int8))
    assert np.all(np.diff(m.energies) >= 0)
    matches = chem.automorphisms(parsed)
    for i in range(len(m.positions)):
      for j in range(i):
        assert chem.symmetric_rmsd(m.positions[i], m.positions[j], matches) >= 0.1


def test_extend_order_marks_two_and_three_hops():
  chain = np.zeros((5, 5), np.int8)
  for i in range(4):
    chain[i, i + 1] = chain[i + 1, i] = chem.SINGLE
  e = chem.extend_order(chain)
  assert e[0, 1] == chem.SINGLE and e[0, 2] == chem.HOP2
  assert e[0, 3] == chem.HOP3 and e[0, 4] == 0 and e[2, 2] == 0


def _dataset(ensembles) -> chem.Dataset:
  return chem.Dataset(splits={"train": ensembles[:2], "val": ensembles[2:3],
                              "test": ensembles[3:]}, stats={"skipped": {}})


def test_cache_round_trip_and_refusals(ensembles, tmp_path):
  p = _params(max_atoms=16)
  d = tmp_path / "c"
  mol_files.save(_dataset(ensembles), d, p)
  back = mol_files.load(d)
  for s in chem.SPLITS:
    for a, b in zip(_dataset(ensembles).splits[s], back.splits[s]):
      assert a.smiles == b.smiles
      np.testing.assert_array_equal(a.positions, b.positions)
      np.testing.assert_array_equal(a.bonds, b.bonds)
  manifest = json.loads((d / "manifest.json").read_text())
  manifest["version"] = mol_files.VERSION + 1
  (d / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(chem.DataError, match="version"):
    mol_files.load(d)
  manifest["version"] = mol_files.VERSION
  (d / "manifest.json").write_text(json.dumps(manifest))
  (d / "arrays.npz").write_bytes((d / "arrays.npz").read_bytes()[:-10] + b"0" * 10)
  with pytest.raises(chem.DataError, match="checksum"):
    mol_files.load(d)
  assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_source_rows_are_padded_disjoint_blocks(ensembles, tmp_path, monkeypatch):
  data = _dataset(ensembles)
  monkeypatch.setattr(molecules, "_dataset", lambda *a: data)
  src = molecules.build(ml_collections.ConfigDict(
      {"source": "molecules", "max_atoms": 16, "train_conformers": 3, "cache_dir": "x",
       "progress": False}))
  assert src.num_train == 6
  consts = src.consts()
  rows = consts["train"]
  spec = src.row_spec
  assert {k: v.shape[1:] for k, v in rows.items()} == {k: s for k, (s, _) in spec.fields.items()}
  n0 = len(ensembles[0].atoms)
  assert rows["atom_mask"][0].sum() == n0 and np.all(rows["pos"][0, n0:] == 0)
  np.testing.assert_allclose(rows["pos"][0, :n0].mean(0), 0, atol=1e-5)
  task = src.task(consts, jax.random.PRNGKey(0))
  a = src.real(consts, task, None, 0, 3)
  b = src.real(consts, task, None, 1, 3)
  ids = lambda r: {tuple(np.asarray(x).ravel()) for x in r["pos"]}
  assert not ids(a) & ids(b)
  assert task.aux["graphs"]["atom_type"].shape == (2, 16)


def test_consts_rows_are_those_training_rows(ensembles, monkeypatch):
  data = _dataset(ensembles)
  monkeypatch.setattr(molecules, "_dataset", lambda *a: data)
  src = molecules.build(ml_collections.ConfigDict(
      {"source": "molecules", "max_atoms": 16, "train_conformers": 3, "cache_dir": "x",
       "progress": False}))
  whole, part = src.consts(), src.consts(rows=(2, 5))  # across the two molecules
  assert part["train"].keys() == whole["train"].keys()
  for k, v in whole["train"].items():
    np.testing.assert_array_equal(part["train"][k], v[2:5], err_msg=k)
  for k in ("val", "graphs"):
    jax.tree.map(np.testing.assert_array_equal, part[k], whole[k])


def test_rmsd_is_rdkits_best_rms_including_symmetry(ensembles):
  mol = ensembles[0]  # tert-butanol: C0 C1(C2)(C3) O4, methyls 0, 2, 3 symmetric
  ref = mol.positions[:1]
  swapped = ref.copy()
  swapped[0, [0, 2]] = swapped[0, [2, 0]]
  rng = np.random.default_rng(0)
  noisy = ref + rng.normal(scale=0.3, size=ref.shape).astype(np.float32)
  d = conformer_quality.rmsd_matrix(mol.smiles, ref, np.concatenate([swapped, noisy]))
  assert d[0, 0] < 1e-3 < chem.kabsch_rmsd(swapped[0], ref[0])
  matches = chem.automorphisms(chem.mol_from_smiles(mol.smiles))
  assert d[0, 1] == pytest.approx(chem.symmetric_rmsd(noisy[0], ref[0], matches),
                                  abs=1e-5)
  # The same pairs straight from RDKit.
  for g, gen in enumerate([swapped[0], noisy[0]]):
    a = conformer_quality._mol_with_conformers(mol.smiles, gen[None])
    b = conformer_quality._mol_with_conformers(mol.smiles, ref)
    assert d[0, g] == pytest.approx(rdMolAlign.GetBestRMS(a, b), abs=1e-9)
  big = ensembles[3]
  d = conformer_quality.rmsd_matrix(big.smiles, big.positions[:2], big.positions[1:][::-1])
  a = conformer_quality._mol_with_conformers(big.smiles, big.positions[1:2])
  b = conformer_quality._mol_with_conformers(big.smiles, big.positions[:1])
  assert d[0, -1] == pytest.approx(rdMolAlign.GetBestRMS(a, b), abs=1e-9)


def test_cov_mat_of_a_reference_set_against_itself(ensembles):
  for m in ensembles[1:]:
    d = conformer_quality.rmsd_matrix(m.smiles, m.positions, m.positions)
    for thr in conformer_quality.THRESHOLDS.values():
      got = conformer_quality.cov_mat(d, thr)
      assert got["cov_r"] == got["cov_p"] == 1.0
      assert got["mat_r"] < 1e-3 and got["mat_p"] < 1e-3
    assert conformer_quality.sanitizes(m.smiles, m.positions[0])
    scrambled = m.positions[0][np.random.default_rng(1).permutation(len(m.atoms))]
    assert not conformer_quality.sanitizes(m.smiles, scrambled)
    assert not conformer_quality.sanitizes(m.smiles, np.full_like(m.positions[0], np.nan))


# --- Bad input --------------------------------------------------------------------------


def test_unparsable_smiles_and_sdf_name_the_line(tmp_path):
  smi = tmp_path / "m.smi"
  smi.write_text("CCO ethanol\n\nC1CC(\n")
  with pytest.raises(chem.DataError, match="line 3"):
    mol_files.read_smiles_file(smi)
  good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
  sdf = tmp_path / "m.sdf"
  sdf.write_text(good + "$$$$\n" + "garbage\nnot a molblock\n" + "$$$$\n")
  first_bad = good.count("\n") + 2
  with pytest.raises(chem.DataError, match=f"line {first_bad} "):
    mol_files.read_sdf(sdf)


def test_too_large_molecules_are_skipped_then_refused(tmp_path):
  smi = tmp_path / "m.smi"
  smi.write_text("CCCCCCCCCCCCCCCCCCCC\nCCCCCCCCCCCCCCCCCCCCCC\n")
  p = _params(kind="smiles", path=str(smi), min_atoms=2, max_atoms=10)
  with pytest.raises(chem.DataError, match="2 size"):
    mol_files.build_dataset(p, tmp_path / "cache", progress=False)
  assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_size_filter_counts_the_atoms_a_row_holds():
  # Ethanol: 3 heavy atoms, 9 with its hydrogens. With hydrogens the rows hold all 9, so
  # the filter must count them (it once counted heavy atoms, and the build failed late).
  mol = Chem.MolFromSmiles("CCO")
  assert chem.passes_filter(mol, 3, 3) is None
  assert chem.passes_filter(mol, 3, 8, hydrogens=True) == "size"
  assert chem.passes_filter(mol, 9, 9, hydrogens=True) is None


def test_geom_paths_without_their_files_are_refused(tmp_path):
  for kind, what in (("geom_pickles", "train_data_40k.pkl"), ("geom_rdkit", "summary_drugs")):
    p = _params(kind=kind, path=str(tmp_path))
    with pytest.raises(chem.DataError, match=what):
      mol_files.build_dataset(p, tmp_path / "cache", progress=False)
  config = load_config("molecules:replace", "smoke")
  config.data.update({"kind": "geom_rdkit", "path": str(tmp_path / "nowhere")})
  assert "does not exist" in molecules.check_config(config)


def _mol_h(smiles: str, seed: int):
  m = Chem.AddHs(Chem.MolFromSmiles(smiles))
  AllChem.EmbedMultipleConfs(m, 2, randomSeed=seed)
  return m


def test_geom_pickles_stand_in(tmp_path, monkeypatch):
  """ConfGF/GeoDiff's splits: a pickled list of PyG 1.x ``Data`` (one per conformer, torch
  tensors, an RDKit ``rdmol`` with hydrogens); read without torch_geometric installed."""
  import torch
  pkg = types.ModuleType("torch_geometric.data.data")

  class Data:
    def __init__(self, **kw):
      self.__dict__.update(kw)
  Data.__module__ = "torch_geometric.data.data"
  Data.__qualname__ = "Data"
  pkg.Data = Data
  for name in ("torch_geometric", "torch_geometric.data", "torch_geometric.data.data"):
    monkeypatch.setitem(sys.modules, name, pkg)
  for i, (split, file) in enumerate(mol_files.GEOM_PICKLES.items()):
    records = []
    for j, smi in enumerate(SMILES[i:i + 2]):
      mol = _mol_h(smi, 11 + j)
      for c in mol.GetConformers():
        records.append(Data(rdmol=mol, pos=torch.tensor(c.GetPositions(), dtype=torch.float32),
                            smiles=smi, totalenergy=torch.tensor([float(-c.GetId())])))
    (tmp_path / file).write_bytes(pickle.dumps(records))
  for name in ("torch_geometric", "torch_geometric.data", "torch_geometric.data.data"):
    monkeypatch.delitem(sys.modules, name)
  data = mol_files.build_dataset(_params(kind="geom_pickles", path=str(tmp_path), max_atoms=16,
                                         num_molecules=0), tmp_path / "cache", progress=False)
  assert [len(data.splits[s]) for s in chem.SPLITS] == [2, 2, 2]
  m = data.splits["train"][0]
  assert m.positions.shape == (2, len(m.atoms), 3) and np.all(m.atoms > 1)
  assert list(m.energies) == [-1.0, 0.0]  # lowest energy first
  src = _mol_h(SMILES[0], 11)
  # The stored conformer is GEOM's, reordered to the SMILES' atom order: same RMSD 0 geometry.
  ref = conformer_quality._mol_with_conformers(m.smiles, m.positions[:1])
  assert rdMolAlign.GetBestRMS(Chem.RemoveHs(src), ref, 1, 0) < 1e-4


def test_geom_rdkit_folder_stand_in(tmp_path):
  (tmp_path / "drugs").mkdir()
  summary = {}
  for i, smi in enumerate(SMILES + ("CCCCCCCCCCCCCCCCCCCC",)):
    mol = _mol_h(smi, 3 + i)
    confs = [{"rd_mol": Chem.Mol(mol, confId=c.GetId()), "totalenergy": float(i - c.GetId()),
              "boltzmannweight": 0.5} for c in mol.GetConformers()]
    name = f"drugs/m{i}.pickle"
    (tmp_path / name).write_bytes(pickle.dumps({"conformers": confs, "smiles": smi}))
    summary[smi] = {"pickle_path": name}
  (tmp_path / "summary_drugs.json").write_text(json.dumps(summary))
  data = mol_files.build_dataset(
      _params(kind="geom_rdkit", path=str(tmp_path), max_atoms=16, num_molecules=0,
              split=(0.5, 0.25, 0.25)), tmp_path / "cache", progress=False)
  assert sum(len(v) for v in data.splits.values()) == len(SMILES)
  assert data.stats["skipped"]["size"] == 1 and data.stats["max_atoms"] == 16


# --- The configs end to end -------------------------------------------------------------


@pytest.fixture
def replace_run(smoke_run):
  """The replace smoke config's 2 generations, the suite's shared run: (workdir, rows)."""
  return smoke_run("molecules:replace")


def test_smoke_resumes_bitwise(replace_run, tmp_path):
  workdir, full = replace_run
  config = load_config("molecules:replace", "smoke")
  short = load_config("molecules:replace", "smoke")
  short.num_generations = 1
  experiment.train_and_evaluate(short, tmp_path / "resumed")
  resumed = experiment.train_and_evaluate(config, tmp_path / "resumed")
  assert resumed == full == read_metrics(workdir)
  assert {"test_loss", "test_loss_global", "test_loss_small_noise", "test_loss_mid_noise",
          "test_loss_large_noise", "cov_r", "mat_r", "cov_p", "mat_p", "cov_r_075",
          "cov_p_075", "sanitize_frac"} <= set(full[0])


def test_sampled_conformers_are_written_as_an_sdf_of_their_molecules(replace_run, tmp_path):
  """sample.py's .sdf: each sample is its training molecule (atoms in array order, from the
  stored SMILES) at the sampled positions, padding atoms dropped."""
  sys.path.insert(0, str(ROOT / "launch"))
  import sample as sample_launcher
  gen = inference.load_generation(replace_run[0], 1)
  rows = inference.sample_generation(gen, 3)
  sample_launcher.write(gen, rows, tmp_path / "s.sdf")
  written = list(Chem.SDMolSupplier(str(tmp_path / "s.sdf"), removeHs=False))
  train = gen.loop.source.dataset.splits["train"]
  assert len(written) == 3
  for mol, m, pos in zip(written, np.asarray(rows["mol_id"]), np.asarray(rows["pos"])):
    atoms = train[int(m)].atoms
    assert [a.GetAtomicNum() for a in mol.GetAtoms()] == atoms.tolist()
    np.testing.assert_allclose(mol.GetConformer().GetPositions(), pos[:len(atoms)], atol=1e-4)


def test_loss_by_noise_curves_and_their_floor(replace_run, tmp_path):
  workdir, _ = replace_run
  run = noise_curves.curves(workdir, [0, 1], points=6)
  sigma = np.asarray(run["sigma"])
  assert 2 <= len(sigma) <= 6 and np.all(np.diff(sigma) > 0)
  assert sorted(run["generations"]) == [0, 1]
  assert all(len(c) == len(sigma) and np.all(np.isfinite(c))
             for c in [run["floor"], *run["generations"].values()])
  # The floor (params None) is the loss of a network that predicts no vectors: all-zero
  # weights give exactly that.
  gen = inference.load_generation(workdir, 1)
  ts = np.searchsorted(np.asarray(gen.loop.model.process.sigmas()), sigma)
  pick = lambda tree: jax.tree.map(lambda x: x[0], tree)
  zeros = jax.tree.map(np.zeros_like, pick(gen.state)["ema"])
  np.testing.assert_allclose(gen.loop.model.loss_by_noise(zeros, pick(gen.tasks), ts),
                             run["floor"], rtol=1e-6)
  noise_curves.plot({"replace": run}, tmp_path / "c.png")
  assert (tmp_path / "c.png").stat().st_size > 1000


def test_loss_by_noise_refuses_bad_input(replace_run, tmp_path):
  workdir, _ = replace_run
  assert noise_curves.generations(workdir, None) == [0, 1]
  with pytest.raises(experiment.validate.ConfigError,
                     match="has no model of generation 5; it has 0, 1"):
    noise_curves.generations(workdir, ["1", "5"])
  with pytest.raises(experiment.validate.ConfigError, match="takes generation numbers"):
    noise_curves.generations(workdir, ["last"])
  (tmp_path / "config.json").write_text(json.dumps({"model": {"name": "vae"}}))
  out = launcher_batch.run([sys.executable, str(ROOT / "launch" / "loss_by_noise.py"),
                            str(tmp_path), f"--out={tmp_path / 'c.png'}"])
  assert out.returncode == 2 and "is a vae run" in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------------------
# The QM9-sized variant (configs/molecules.py:size=qm9).


def test_qm9_filter_keeps_small_cnof_molecules_with_hydrogens():
  d = load_config("molecules:size=qm9", None).data
  p = molecules.params_of(d)
  assert (p["elements"], p["max_heavy_atoms"], p["hydrogens"]) == (("C", "N", "O", "F"), 9,
                                                                   True)
  cases = {"CC(C)(C)O": None,           # 5 heavy atoms, 15 with hydrogens
           "CC(F)(F)C(N)=O": None,      # 7 heavy, 12
           "CCCCCCCCC": None,           # nonane: 9 heavy, 29 (the largest row)
           "CCCCCCCCCC": "size",        # decane: 10 heavy atoms
           "OC(=O)c1ccccc1O": "size",   # salicylic acid: 10 heavy atoms
           "CCO": "size",               # 9 atoms with hydrogens, below min_atoms
           "CCS": "elements", "CCCl": "elements", "CC[O-].[Na+]": "fragments"}
  got = {s: chem.passes_filter(Chem.MolFromSmiles(s), p["min_atoms"], p["max_atoms"],
                               p["hydrogens"], p["elements"], p["max_heavy_atoms"])
         for s in cases}
  assert got == cases
  # The drug-like configs' parameters (and so their cache folders) are as before.
  drugs = molecules.params_of(load_config("molecules", "cpu").data)
  assert "elements" not in drugs and "max_heavy_atoms" not in drugs


def test_qm9_variant_spelling_and_refusals(tmp_path):
  from collapse_jax import variants
  with pytest.raises(variants.VariantError, match="write size=qm9"):
    load_config("molecules:qm9", "smoke")
  assert load_config("molecules:size=qm9", "cpu").data.max_atoms == 29
  assert molecules.check_config(load_config("molecules:size=qm9", "smoke")) is None
  for update, match in (({"elements": ("C", "Xx")}, "data.elements must be heavy elements"),
                        ({"min_atoms": 30}, "leaves no molecule"),
                        ({"kind": "geom_rdkit", "path": str(tmp_path)}, "embedded, smiles and sdf"),
                        ({"max_heavy_atoms": -1}, "data.max_heavy_atoms must be")):
    config = load_config("molecules:size=qm9", "smoke")
    config.data.update(update)
    assert match in molecules.check_config(config), update


def test_qm9_smoke_builds_its_dataset_and_runs_a_generation(tmp_path):
  config = load_config("molecules:size=qm9,replace", "smoke")
  config.num_generations = 1
  data = molecules.build(config.data).dataset
  mols = [m for s in chem.SPLITS for m in data.splits[s]]
  assert len(mols) == config.data.num_molecules
  for m in mols:
    assert set(m.atoms.tolist()) <= {1, 6, 7, 8, 9} and 1 in m.atoms
    assert (m.atoms > 1).sum() <= 9 and 10 <= len(m.atoms) <= config.data.max_atoms
  rows = experiment.train_and_evaluate(config, tmp_path / "run")
  assert len(rows) == 1 and np.isfinite(rows[0]["test_loss"])
  assert 0 <= rows[0]["sanitize_frac"] <= 1
