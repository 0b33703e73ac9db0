"""Compares finished runs: one plot and one Markdown table.

    python launch/report.py runs/replace runs/accumulate runs/accumulate_subsample --out=runs/cmp
"""
import pathlib
import sys

from absl import app, flags

from collapse_jax.report import compare

_OUT = flags.DEFINE_string("out", "report", "Directory for comparison.png and comparison.md.")


def main(argv):
  if len(argv) < 2:
    sys.exit("error: give one or more workdirs to compare.")
  try:
    png, table = compare.compare([pathlib.Path(a) for a in argv[1:]], pathlib.Path(_OUT.value))
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(table)
  print(f"Wrote {png} and {png.with_suffix('.md')}.")


if __name__ == "__main__":
  app.run(main)
