"""Compares finished runs: one plot and one Markdown table.

    python launch/report.py runs/replace runs/accumulate runs/accumulate_subsample --out=runs/cmp
"""
import pathlib

from absl import flags

from collapse_jax import cli
from collapse_jax.report import compare

_OUT = flags.DEFINE_string("out", "report",
                           "Directory for report.html, comparison.png and comparison.md.")


def main(argv):
  if len(argv) < 2:
    cli.fail("give one or more workdirs to compare, e.g. launch/report.py runs/a runs/b.")
  workdirs = [pathlib.Path(a) for a in argv[1:]]
  twice = sorted({str(w) for w in workdirs if workdirs.count(w) > 1})
  if twice:
    cli.fail(f"{', '.join(twice)} given twice; name each run once.")
  png, table = compare.compare(workdirs, pathlib.Path(_OUT.value))
  print(table)
  print(f"Wrote {png.parent / 'report.html'} (and {png.name}, {png.with_suffix('.md').name}).")


if __name__ == "__main__":
  cli.run(main, positional=True)
