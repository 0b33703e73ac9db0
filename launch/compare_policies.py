"""Runs one config under several policies and compares them (collapse_jax/report/compare.py).

    python launch/compare_policies.py --config=configs/digits_vae.py \
        --policies=replace,accumulate,mix --workdir=runs/digits

Each policy runs in <workdir>/<policy> (resumable like any run); <workdir>/report.html shows
the comparison (comparison.png and comparison.md beside it).
"""
import pathlib

from absl import flags

from collapse_jax import cli

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.")
_POLICIES = flags.DEFINE_list("policies", ["replace", "accumulate", "accumulate_subsample"],
                              "Policies to run, each in <workdir>/<policy>.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete runs already in --workdir.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.run refuses positional arguments
  from collapse_jax import experiment  # late: a refused command line needs no JAX start
  from collapse_jax.report import compare
  experiment.configure_logging()
  policies = _POLICIES.value
  if not policies or not all(p.strip() for p in policies):
    cli.fail(f"--policies needs a comma-separated list of policy names, got "
             f"{','.join(policies)!r}.")
  if len(set(policies)) < len(policies):
    cli.fail(f"--policies names a policy twice ({','.join(policies)}); each runs in "
             "<workdir>/<policy>.")
  root = pathlib.Path(_WORKDIR.value)
  _, table = compare.run_policies(_CONFIG.value, policies, root,
                                  overwrite=_OVERWRITE.value)
  print(table)
  print(f"Wrote {root / 'report.html'} (and comparison.png, comparison.md beside it).")


if __name__ == "__main__":
  cli.run(main)
