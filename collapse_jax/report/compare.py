"""Reads several workdirs and writes a comparison plot and a Markdown table."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from collapse_jax.report import plots


def load_run(workdir: pathlib.Path) -> tuple[str, list[dict]]:
  """``(label, metric rows)`` of a workdir; the label names its policy."""
  config = json.loads((workdir / "config.json").read_text())
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l]
  policy = config["policy"]["name"]
  if policy == "mix":
    policy += f"(lambda={config['policy']['mix_lambda']})"
  return f"{policy} [{workdir.name}]", rows


def markdown_table(runs: dict[str, list[dict]]) -> str:
  """Per run and metric: mean ± std over seeds at the first and last generation."""
  lines = ["| run | metric | first generation | last generation |", "|---|---|---|---|"]
  for label, rows in runs.items():
    for metric in plots.metric_names(rows):
      gens, values = plots.by_generation(rows, metric)
      cell = lambda v: f"{np.mean(v):.4g} ± {np.std(v):.2g}"
      lines.append(f"| {label} | {metric} | g={gens[0]}: {cell(values[0])} | "
                   f"g={gens[-1]}: {cell(values[-1])} |")
  return "\n".join(lines) + "\n"


def compare(workdirs: list[pathlib.Path], out_dir: pathlib.Path) -> tuple[pathlib.Path, str]:
  """Writes ``comparison.png`` and ``comparison.md`` to ``out_dir``; returns (png, table)."""
  missing = [str(w) for w in workdirs if not (w / "metrics.jsonl").exists()]
  if missing:
    raise FileNotFoundError(f"No finished run (metrics.jsonl) in {', '.join(missing)}.")
  runs = dict(load_run(w) for w in workdirs)
  out_dir.mkdir(parents=True, exist_ok=True)
  png = out_dir / "comparison.png"
  plots.plot_comparison(runs, png)
  table = markdown_table(runs)
  (out_dir / "comparison.md").write_text(table)
  return png, table
