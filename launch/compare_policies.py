"""Runs one config under several policies and compares them in one plot and table.

    python launch/compare_policies.py --config=configs/digits_vae.py \
        --policies=replace,accumulate,accumulate_subsample,mix --workdir=runs/digits

Each policy runs in <workdir>/<policy> (resumable like any run); the comparison goes to
<workdir>/comparison.png and comparison.md, sample grids to <workdir>/<policy>/samples/.
"""
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from collapse_jax import experiment
from collapse_jax.report import compare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.")
_POLICIES = flags.DEFINE_list("policies", ["replace", "accumulate", "accumulate_subsample"],
                              "Policies to run.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete runs already in --workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}.")
  experiment.configure_logging()
  root = pathlib.Path(_WORKDIR.value)
  for policy in _POLICIES.value:
    config = _CONFIG.value.copy_and_resolve_references()
    config.policy.name = policy
    experiment.run_or_exit(experiment.train_and_evaluate, config, root / policy,
                           overwrite=_OVERWRITE.value)
  png, table = experiment.run_or_exit(compare.compare, [root / p for p in _POLICIES.value], root)
  print(table)
  print(f"Wrote {png}, {root / 'comparison.md'} and per-policy sample grids.")


if __name__ == "__main__":
  app.run(main)
