r"""Runs one self-consuming experiment.

    python launch/main.py --config=configs/linreg.py:accumulate[,smoke] --workdir=runs/acc \
        [--config.num_seeds=10] [--overwrite]
"""
from absl import flags

from collapse_jax import cli

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the run already in --workdir.")
_INTACT = flags.DEFINE_bool(
    "resume_from_intact", False,
    "If the newest checkpoint is damaged, continue from the newest intact one (the damaged "
    "ones are moved to checkpoints/damaged/).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses positional arguments
  from collapse_jax import experiment  # late: a refused command line needs no JAX start
  experiment.configure_logging()
  experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                                resume_from_intact=_INTACT.value)


if __name__ == "__main__":
  cli.run(main)
