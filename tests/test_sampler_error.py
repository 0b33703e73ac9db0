"""tools/sampler_error.py: its metrics on hand-made conformers of a 3-atom molecule, whose
answers are known, and its refusal of a workdir that holds no molecule run."""
import json
import sys

import numpy as np
import pytest

from collapse_jax.data import molecule_chemistry as chem

from conftest import ROOT
from launcher_batch import run_many

sys.path.insert(0, str(ROOT / "tools"))
import sampler_error  # noqa: E402  (a script, not a package module)

SMILES = "CCO"  # ethanol's heavy atoms, no hydrogens written: 3 atoms, bonds 0-1 and 1-2


def _bonds() -> np.ndarray:
  return chem.graph_arrays(chem.mol_from_smiles(SMILES))[1]


def _bent(l1: float, l2: float, angle_deg: float = 110.0) -> np.ndarray:
  """``[3, 3]`` C-C-O with bond lengths ``l1`` (C-C), ``l2`` (C-O) at ``angle_deg``."""
  a = np.deg2rad(angle_deg)
  return np.array([[l1, 0.0, 0.0], [0.0, 0.0, 0.0], [l2 * np.cos(a), l2 * np.sin(a), 0.0]])


def _rotated(x: np.ndarray, shift=(1.0, -2.0, 0.5)) -> np.ndarray:
  """``x [n, 3]`` turned 90 degrees about z and moved: the same conformer."""
  turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  return x @ turn.T + np.asarray(shift)


def test_bond_errors_against_the_references_mean_length():
  assert sampler_error.bond_pairs(_bonds()).tolist() == [[0, 1], [1, 2]]
  refs = np.stack([_bent(1.50, 1.40), _bent(1.54, 1.44, 115.0)])  # means 1.52, 1.42
  gens = np.stack([_rotated(_bent(1.52, 1.42, 100.0)),  # the means: no error, any angle
                   _bent(1.62, 1.40),                     # +0.10, -0.02
                   np.full((3, 3), np.nan)])              # not finite
  err = sampler_error.bond_errors(refs, gens, _bonds())
  np.testing.assert_allclose(err[:2], [[0.0, 0.0], [0.10, 0.02]], atol=1e-12)
  assert np.isinf(err[2]).all()


def test_best_rmsd_and_exploded():
  refs = np.stack([_bent(1.52, 1.42), _bent(1.52, 1.42, 160.0)])
  far = _bent(1.52, 1.42)
  far[2] += [0.0, 0.0, 12.0]  # the O thrown 12 A out of the plane
  gens = np.stack([_rotated(refs[1]), far, np.full((3, 3), np.inf)])
  best = sampler_error.best_rmsd(SMILES, refs, gens)
  assert best[0] == pytest.approx(0.0, abs=1e-6)   # a reference, rotated and moved
  assert best[1] > sampler_error.EXPLODED and np.isinf(best[2])
  row = sampler_error.summarize(best, np.array([0.0, 0.1, 0.3, 5.0, np.inf, np.nan]),
                                np.array([True, False, False]))
  assert row["conformers"] == 3
  assert row["exploded"] == pytest.approx(2 / 3) and row["sanitise"] == pytest.approx(1 / 3)
  assert row["best_rmsd_median"] == best[1]
  # Capped at 1 A: 0, 0.1, 0.3, 1, 1, 1 (NaN counts as the cap).
  assert row["bond_error_rms"] == pytest.approx(np.sqrt((0.01 + 0.09 + 3) / 6))
  assert row["bond_error_median"] == pytest.approx((0.3 + 5.0) / 2)


def test_score_pools_molecules_and_drops_padding():
  mol = chem.Molecule(smiles=SMILES, atoms=np.array([6, 6, 8]), bonds=_bonds(),
                      positions=np.stack([_bent(1.52, 1.42)]).astype(np.float32),
                      energies=np.zeros(1))
  pos = np.zeros((2, 5, 3))  # padded to 5 atoms; padding at the origin must not count
  pos[0, :3] = _rotated(_bent(1.52, 1.42))
  pos[1, :3] = _bent(1.62, 1.42)
  row = sampler_error.score([mol], [mol.positions], pos, np.array([0, 0]))
  assert row["conformers"] == 2 and row["exploded"] == 0.0
  assert row["bond_error_median"] == pytest.approx(0.0, abs=1e-6)
  assert row["bond_error_rms"] == pytest.approx(np.sqrt(0.01 / 4), rel=1e-5)


def test_cli_refuses_a_workdir_without_a_molecule_run(tmp_path):
  (tmp_path / "gauss").mkdir()
  (tmp_path / "gauss" / "config.json").write_text(json.dumps(
      {"data": {"source": "gaussian"}, "model": {"name": "gaussian"}}))
  cases = ((tmp_path / "none", "holds no run"), (tmp_path / "gauss", "is not a molecule run"))
  # Two `python tools/sampler_error.py` processes, forked from one warm interpreter.
  outs = run_many([([ROOT / "tools" / "sampler_error.py", f"--workdir={w}"], ROOT)
                   for w, _ in cases])
  for out, (_, says) in zip(outs, cases):
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: ") and says in out.stderr
    assert "Traceback" not in out.stderr
