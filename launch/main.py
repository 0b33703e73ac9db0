"""Runs one self-consuming experiment.

    python launch/main.py --config=configs/linreg_accumulate.py[:smoke] --workdir=runs/acc \
        [--config.num_seeds=10] [--overwrite]
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from collapse_jax import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the run already in --workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}.")
  experiment.configure_logging()
  experiment.run_or_exit(experiment.train_and_evaluate, _CONFIG.value, _WORKDIR.value,
                         overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  app.run(main)
