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
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 (else from the "
    "environment, or auto-detected on Cloud TPU and SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: processes in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses positional arguments
  from collapse_jax import experiment  # late: a refused command line needs no JAX start
  from collapse_jax.parallel import distributed
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  experiment.configure_logging()
  experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                                resume_from_intact=_INTACT.value)


if __name__ == "__main__":
  cli.run(main)
