"""Writes tests/golden_metrics.json: every config's ':smoke' metrics and the quick-start's
generations 0..2 (policy accumulate), under the test suite's XLA flags.

    python tools/make_golden.py [--only NAME ...] [--out FILE | --same_as FILE]

The golden-metrics test (tests/test_configs.py) compares fresh runs with this file within
each metric's measured tolerance (tests/golden_tolerances.json).
Regenerate only when a result moves on purpose, and say why in the commit.

A refactor keeps every number bitwise on the machine it is made on, which the tolerant test
cannot see: write this machine's numbers before it (``--out /tmp/before.json``), then
``--same_as /tmp/before.json`` after it prints each entry ``same`` or ``MOVED`` and exits 1
if any moved.
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402  (sets the suite's XLA flags and data paths before JAX starts)

from collapse_jax import experiment  # noqa: E402

GOLDEN = ROOT / "tests" / "golden_metrics.json"
# Each experiment's smoke variant under each policy the golden file holds, by its canonical
# name: ``<config file>:<variants>`` as written after ``--config=configs/`` (``:smoke`` added).
RUNS = (
    "cifar10:mix,process=ddpm", "cifar10:mix,process=edm", "cifar10:mix,process=otcfm",
    "curation:replace",
    "digits_vae:accumulate", "ffhq:accumulate", "gaussian:accumulate",
    "gaussian:accumulate_subsample", "gaussian:replace", "kde_moons:accumulate",
    "kde_moons:accumulate_subsample", "kde_moons:replace", "linreg:accumulate",
    "linreg:accumulate_subsample", "linreg:replace", "mnist_vae:accumulate",
    "mnist_vae:accumulate_subsample", "mnist_vae:replace", "molecules:accumulate",
    "molecules:accumulate_subsample", "molecules:replace", "tinystories:accumulate",
    "tinystories:accumulate_subsample", "tinystories:replace", "toy_diffusion:accumulate",
    "toy_diffusion:replace", "toy_diffusion_8gaussians:replace", "toy_flow:accumulate",
    "toy_flow:replace",
)
QUICKSTART = "quickstart"


def quickstart_config():
  """The README's main job (policy accumulate) cut to its first 2 generations of one seed
  (the suite's time budget: seeds are independent replicates of the same program, and a
  generation's numbers do not depend on how many follow it)."""
  config = conftest.load_config("digits_vae:accumulate", None)
  config.num_generations, config.num_seeds = 2, 1
  return config


def golden_names() -> list[str]:
  """Every name make_golden can write: the smoke runs, then the quick-start."""
  return list(RUNS) + [QUICKSTART]


def golden_config(name: str):
  """The config whose run gives the golden rows of ``name``."""
  return quickstart_config() if name == QUICKSTART else conftest.load_config(name)


def golden_rows(name: str) -> list[dict]:
  """The metric rows of one golden entry, run in a temporary workdir (also used by
  tools/measure_drift.py, so both produce them the same way)."""
  with tempfile.TemporaryDirectory() as tmp:
    return experiment.train_and_evaluate(golden_config(name), tmp)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", nargs="*", default=None)
  where = parser.add_mutually_exclusive_group()
  where.add_argument("--out", type=pathlib.Path, default=GOLDEN, help="file to write")
  where.add_argument("--same_as", type=pathlib.Path, help="file to compare with, bitwise")
  args = parser.parse_args()
  path = args.same_as or args.out
  if args.same_as and not path.is_file():
    parser.error(f"--same_as {path} does not exist; write it first with --out.")
  golden = json.loads(path.read_text()) if path.exists() else {}
  moved = False
  for name in golden_names():
    if args.only and name not in args.only:
      continue
    rows = json.loads(json.dumps(golden_rows(name)))  # as the file holds them
    if args.same_as:
      same = rows == golden.get(name)
      moved |= not same
      print(name, "same" if same else "MOVED", flush=True)
    else:
      golden[name] = rows
      print(name, "done", flush=True)
  if args.same_as:
    sys.exit(1 if moved else 0)
  path.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  main()
