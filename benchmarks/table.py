"""benchmarks/README.md's results table, made from the records in benchmarks/results/*.json.

    python benchmarks/table.py           # print the table
    python benchmarks/table.py --write   # and put it into benchmarks/README.md

A record is what a benchmark writes with ``--json PATH`` (benchmarks/harness.py): one file
holds the last run of one benchmark in one setting, named ``<benchmark>[-<setting>].json``
(e.g. lm_vs_torch-1t-avx2.json); running it again with the same path replaces it. The
table has a row per file: the benchmark and setting, its target, the last figure (the
record's headline), the command that produced it, its date and machine. Only the standard
library: the table is remade without starting JAX.
"""
import argparse
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
# The README's rows in this order of benchmarks, then by file name.
ORDER = ("lm_vs_torch", "conv_vs_torch", "geodiff_vs_torch", "linreg_sweep", "scale",
         "memory_table")
BEGIN = "<!-- results table: made by `python benchmarks/table.py --write`; edit the records -->"
END = "<!-- end of results table -->"


def cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def table(results: pathlib.Path = RESULTS) -> str:
  """The markdown table of every record in ``results``."""
  records = []
  for path in sorted(results.glob("*.json")):
    record = json.loads(path.read_text())
    rank = ORDER.index(record["benchmark"]) if record["benchmark"] in ORDER else len(ORDER)
    records.append((rank, path.stem, record))
  rows = ["| benchmark (setting) | target | last figure | command | date | machine |",
          "|---|---|---|---|---|---|"]
  for _, name, r in sorted(records, key=lambda x: x[:2]):
    rows.append("| " + " | ".join(cell(x) for x in (
        name, r["target"], r["headline"], f"`{r['command']}`", r["date"][:10],
        r["machine"])) + " |")
  return "\n".join(rows)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--write", action="store_true",
                  help=f"replace the table between its markers in {README.name}")
  args = ap.parse_args()
  text = table()
  print(text)
  if args.write:
    readme = README.read_text()
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
      raise SystemExit(f"{README}: no {BEGIN!r} ... {END!r} markers")
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"wrote the table into {README}")


if __name__ == "__main__":
  main()
