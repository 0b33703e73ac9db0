"""Comparisons of finished runs, and one config run under several policies.

  compare(workdirs, out_dir)               comparison.png (papers), comparison.md
                                           (terminals) and report.html (people) in out_dir
  run_policies(config, policies, out_dir)  the config in out_dir/<policy> for each policy
                                           (resumable like any run), then compare()
"""
from __future__ import annotations

import pathlib
from collections.abc import Sequence

from collapse_jax.report import html, plots
from collapse_jax.report import runs as runs_lib
from collapse_jax.report.runs import Run


def markdown_table(runs: list[Run], metrics: list[str]) -> str:
  """Per metric (headline first, bookkeeping last) and run: mean ± std over seeds at the first
  and last generation, and the change of the mean in percent."""
  lines = ["| run | metric | first generation | last generation | change |",
           "|---|---|---|---|---|"]
  for metric, run, c, first, last in runs_lib.changes(runs, metrics):
    lines.append(f"| {run.label} | {metric} | {first} | {last} | "
                 f"{runs_lib.format_percent(c.percent)} |")
  return "\n".join(lines) + "\n"


def compare(workdirs: Sequence[pathlib.Path], out_dir: pathlib.Path
            ) -> tuple[pathlib.Path, str]:
  """Writes ``comparison.png``, ``comparison.md`` and ``report.html`` to ``out_dir``;
  returns (the PNG's path, the Markdown table). Raises FileNotFoundError for a workdir
  without a finished run."""
  runs = runs_lib.load_runs([pathlib.Path(w) for w in workdirs])
  metrics = runs_lib.ordered_metrics(runs)
  out_dir.mkdir(parents=True, exist_ok=True)
  png = out_dir / "comparison.png"
  plots.plot_comparison({r.label: r.rows for r in runs}, png, metrics)
  table = markdown_table(runs, metrics)
  (out_dir / "comparison.md").write_text(table)
  html.write(runs, out_dir)
  return png, table


def run_policies(config, policies: Sequence[str], out_dir: pathlib.Path, *,
                 overwrite: bool = False) -> tuple[pathlib.Path, str]:
  """Runs ``config`` once per policy in ``out_dir/<policy>`` and compares the runs there.

  Raises what `experiment.train_and_evaluate` raises (ConfigError, CheckpointError, ...).
  """
  from collapse_jax import experiment, validate  # lazy: the driver imports report.plots

  out_dir = pathlib.Path(out_dir)
  configs = {}
  for policy in policies:
    configs[policy] = config.copy_and_resolve_references()
    configs[policy].policy.name = policy
    validate.check(configs[policy])  # every policy's mistake before the first run starts
  workdirs = []
  for policy, run_config in configs.items():
    workdir = out_dir / policy
    experiment.train_and_evaluate(run_config, workdir, overwrite=overwrite)
    workdirs.append(workdir)
  return compare(workdirs, out_dir)
