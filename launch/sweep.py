r"""Runs one config over the product of value lists of its fields and draws the sweep.

    python launch/sweep.py --config=configs/digits_vae.py:mix \
        --sweep=policy.mix_lambda=0,0.25,0.5,1,2,4,inf --workdir=runs/lambda

Each point runs in <workdir>/<field=value,...> (resumable like any run); <workdir>/sweep.html
draws each headline metric against the swept value, report.html every point's curves.
--point=I --num_points=N runs one slice (SLURM array jobs: taken from SLURM_ARRAY_TASK_ID
and SLURM_ARRAY_TASK_COUNT when not given); the report shows whatever points are done.
Points draw their own plots/*.png only with --point_figures.
"""
import os
import pathlib

from absl import flags

from collapse_jax import cli

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the points' runs.")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "field=value1,value2,... (repeatable: the "
                                   "product of the axes).")
_POINT = flags.DEFINE_integer("point", None, "The slice of points this process runs.")
_NUM_POINTS = flags.DEFINE_integer("num_points", None, "Slices in all.")
_ALLOW_LARGE = flags.DEFINE_bool("allow_large", False, "Allow more than 64 points.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the points' runs already there.")
_POINT_FIGURES = flags.DEFINE_bool("point_figures", False, "Each point also draws its own "
                                   "plots/*.png (the sweep's report draws every point).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses positional arguments
  from collapse_jax import experiment, sweep  # late: a refused command line needs no JAX
  experiment.configure_logging()
  point = _POINT.value if _POINT.value is not None else int(
      os.environ.get("SLURM_ARRAY_TASK_ID", 0))
  num_points = _NUM_POINTS.value or int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
  axes = sweep.parse_axes(_CONFIG.value, _SWEEP.value, _ALLOW_LARGE.value)
  page = sweep.run(_CONFIG.value, axes, pathlib.Path(_WORKDIR.value), overwrite=_OVERWRITE.value,
                   point=point, num_points=num_points, point_figures=_POINT_FIGURES.value)
  print(f"Wrote {page} (report.html, sweep.png and sweep.md beside it).")


if __name__ == "__main__":
  cli.run(main)
