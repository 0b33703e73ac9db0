"""A sweep's report (collapse_jax/sweep.py): ``sweep.png``, each headline metric against the
first swept field at the first and last generation (mean and spread over seeds; with more
axes, one line per combination of the others at the last generation), ``sweep.md`` and a
self-contained ``sweep.html`` listing every point, done or not, and ``report.html`` (the
curves over generations of the finished points, from report/compare.py).
"""
from __future__ import annotations

import base64
import html
import pathlib

import numpy as np

from collapse_jax.errors import UserError
from collapse_jax.report import compare, plots
from collapse_jax.report import runs as runs_lib


MAX_PANELS = 6


def _finished(workdir: pathlib.Path) -> bool:
  return (workdir / "timing.json").exists()  # written when a run ends


def _at(rows: list[dict], metric: str, generation: int) -> tuple[float, float]:
  gens, values = plots.by_generation(rows, metric)
  row = values[list(gens).index(generation)]
  return float(np.mean(row)), float(np.std(row))


def _figure(axes, done: dict, metrics: list[str], path: pathlib.Path) -> None:
  """``done``: point name -> (setting, rows)."""
  first, others = axes[0], axes[1:]
  x = np.arange(len(first.values))
  plt = plots.pyplot()
  fig, grid = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
  for ax, metric in zip(grid[0], metrics):
    lines = {}
    for setting, rows in done.values():
      last = max(r["generation"] for r in rows)
      rest = ", ".join(f"{k}={setting[k]}" for k in (a.field for a in others))
      picks = [(f"generation {last}" + (f", {rest}" if rest else ""), last)]
      if not others:
        picks.insert(0, ("generation 0", 0))
      for label, g in picks:
        lines.setdefault(label, {})[first.values.index(setting[first.field])] = _at(rows, metric, g)
    for label, got in sorted(lines.items()):
      xs = sorted(got)
      mean, std = (np.array([got[i][k] for i in xs]) for k in (0, 1))
      line, = ax.plot(x[xs], mean, marker="o", label=label)
      ax.fill_between(x[xs], mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set(xticks=x, xticklabels=[str(v) for v in first.values], xlabel=first.field,
           title=metric)
  grid[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(out_dir: pathlib.Path, axes, points) -> pathlib.Path:
  """Writes the report of the finished ``points`` (``(name, config, setting)``, all of the
  sweep's) in ``out_dir``; returns ``sweep.html``."""
  done = {}
  for name, _, setting in points:
    if _finished(out_dir / name):
      done[name] = (setting, runs_lib.read_rows(out_dir / name / "metrics.jsonl"))
  if not done:
    raise UserError(f"No point of the sweep in {out_dir} has finished yet.")
  compare.compare([out_dir / name for name in done], out_dir)
  common = set.intersection(*(set(rows[0]) for _, rows in done.values()))
  metrics = [m for m in runs_lib.HEADLINE if m in common][:MAX_PANELS]
  _figure(axes, done, metrics, out_dir / "sweep.png")
  header = ["point", "status"] + [f"{m} (last generation)" for m in metrics]
  table = []  # one list of cells per point, rendered as Markdown and as HTML
  for name, _, _ in points:
    if name in done:
      rows = done[name][1]
      last = max(r["generation"] for r in rows)
      table.append([name, "done"] + [
          runs_lib.format_value(*_at(rows, m, last), len(rows) // (last + 1)) for m in metrics])
    else:
      table.append([name, "not run yet"] + [""] * len(metrics))
  md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  md += ["| " + " | ".join(cells) + " |" for cells in table]
  (out_dir / "sweep.md").write_text("\n".join(md) + "\n")
  png = base64.b64encode((out_dir / "sweep.png").read_bytes()).decode("ascii")
  rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                      for cells in table)
  page = (f"<!doctype html><meta charset='utf-8'><title>sweep</title>"
          f"<h1>Sweep over {html.escape(', '.join(a.field for a in axes))}</h1>"
          f"<p>{len(done)} of {len(points)} points done. Curves over generations of every "
          f"finished point: <a href='report.html'>report.html</a>.</p>"
          f"<img alt='metrics against {html.escape(axes[0].field)}' "
          f"src='data:image/png;base64,{png}' style='max-width:100%'>"
          "<table border=1 cellpadding=4><tr>"
          + "".join(f"<th>{html.escape(h)}</th>" for h in header) + f"</tr>{rows_html}</table>")
  path = out_dir / "sweep.html"
  path.write_text(page, encoding="utf-8")
  return path
