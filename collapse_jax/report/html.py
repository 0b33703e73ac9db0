"""One self-contained ``report.html`` per comparison: every image embedded as a data URI, no
script, no network, so it opens from disk and can be mailed as one file.

Sections, in the order a reader needs them: what the samples look like (a strip per run
across chosen generations: image grids, text stories or 2-D scatter), the headline metrics
at a glance (first -> last generation), one chart per metric (mean and spread over seeds,
closed-form theory dashed where a ``theory_*`` column exists; headline metrics first,
bookkeeping last), the first/last table with the change in percent, the config fields that
differ between the runs, and each run's wall time.
"""
from __future__ import annotations

import base64
import html
import json
import pathlib

import numpy as np

from collapse_jax.report import plots
from collapse_jax.report import runs as runs_lib
from collapse_jax.report.runs import Run

MAX_COLUMNS = 6       # generations shown in a sample strip
STORY_CHARS = 700     # characters of a story shown per cell

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.2em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.strip img { width: 144px; image-rendering: pixelated; display: block; }
.scroll { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
.charts figure { margin: 0; } .charts img { width: 460px; }
img.wide { max-width: 100%; height: auto; }
pre.story { white-space: pre-wrap; max-width: 320px; font-size: 0.8em; margin: 0; }
.worse { color: #b00020; } .better { color: #0b6e0b; }
"""


def _data_uri(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, css: str = "") -> str:
  klass = f' class="{css}"' if css else ""
  return f'<img src="{_data_uri(png)}" alt="{html.escape(alt)}"{klass}>'


def _strip(runs: list[Run], folder: str, suffix: str, cell, reference: tuple[str, str] | None = None
           ) -> str:
  """A table, one row per run and one column per generation every run has; ``reference``:
  (heading, cell) of a first column beside all rows (the real images)."""
  files = [runs_lib.generation_files(r.workdir, folder, suffix) for r in runs]
  common = sorted(set.intersection(*(set(f) for f in files)))
  if not common:
    return ""
  gens = runs_lib.choose_generations(common, MAX_COLUMNS)
  head = "".join(f"<th>generation {g}</th>" for g in gens)
  rows = []
  for i, (r, f) in enumerate(zip(runs, files)):
    lead = (f'<td rowspan="{len(runs)}">{reference[1]}</td>' if reference and i == 0 else "")
    rows.append(f"<tr><th>{html.escape(r.label)}</th>{lead}" +
                "".join(f"<td>{cell(f[g], r, g)}</td>" for g in gens) + "</tr>")
  ref_head = f"<th>{reference[0]}</th>" if reference else ""
  return (f'<div class="scroll"><table class="strip"><tr><th>run</th>{ref_head}{head}</tr>'
          f'{"".join(rows)}</table></div>')


def _samples_section(runs: list[Run], out_dir: pathlib.Path) -> str:
  parts = []
  real = next((r.workdir / "samples" / "real.png" for r in runs
               if (r.workdir / "samples" / "real.png").exists()), None)
  reference = None if real is None else ("real (held out)",
                                         _img(real.read_bytes(), "real held-out images"))
  image_strip = _strip(runs, "samples", "png",
                       lambda p, r, g: _img(p.read_bytes(), f"{r.label}, generation {g}"),
                       reference)
  if image_strip:
    parts.append("<p>Samples of seed 0's model per generation, one row per run, beside real "
                 "images.</p>" + image_strip)
  story_strip = _strip(
      runs, "stories", "txt",
      lambda p, r, g: f'<pre class="story">{html.escape(p.read_text()[:STORY_CHARS])}</pre>')
  if story_strip:
    parts.append("<p>Sample stories of seed 0's model, one row per run.</p>" + story_strip)
  scatter = _scatter(runs, out_dir)
  if scatter:
    parts.append(scatter)
  return "<h2>Samples</h2>" + "".join(parts) if parts else ""


def _scatter(runs: list[Run], out_dir: pathlib.Path) -> str:
  """The 2-D toys' scatter rows (report/scatter.py), or each run's own figure."""
  if not any((r.workdir / "samples2d").exists() or
             (r.workdir / "plots" / "samples2d.png").exists() for r in runs):
    return ""
  try:
    from collapse_jax.report import scatter  # lazy: only 2-D runs need it
    png = scatter.scatter_comparison([r.workdir for r in runs], out_dir / "samples2d.png",
                                     labels=[r.label for r in runs])
    return ("<p>Samples over the real density, one row per run.</p>" +
            _img(png.read_bytes(), "2-D samples per run", "wide"))
  except (ImportError, AttributeError, FileNotFoundError):
    figures = [(r, r.workdir / "plots" / "samples2d.png") for r in runs]
    return "".join(f"<p>{html.escape(r.label)}</p>{_img(p.read_bytes(), r.label, 'wide')}"
                   for r, p in figures if p.exists())


def _change_cell(change: runs_lib.Change, metric: str) -> str:
  """The change in percent, red where the metric got worse, green where better."""
  p, better = change.percent, runs_lib.BETTER.get(metric, 0)
  css = ("num" if not np.isfinite(p) or p == 0 or not better else
         "num better" if np.sign(p) == better else "num worse")
  return f'<td class="{css}">{runs_lib.format_percent(p)}</td>'


def _glance(runs: list[Run], metrics: list[str]) -> str:
  """Headline metrics, first -> last generation, one line per run."""
  headline = [m for m in metrics if m in runs_lib.HEADLINE]
  if not headline:
    return ""
  items = []
  for r in runs:
    parts = []
    for m in headline:
      c = runs_lib.change(r, m)
      parts.append(f"{m} {c.first[0]:.4g} &rarr; {c.last[0]:.4g} "
                   f"({runs_lib.format_percent(c.percent)})")
    items.append(f"<li><b>{html.escape(r.label)}</b>: {'; '.join(parts)}</li>")
  first = min(r.generations[0] for r in runs)
  last = max(r.generations[-1] for r in runs)
  return (f"<h2>At a glance (generation {first} &rarr; {last}, mean over seeds)</h2>"
          f"<ul>{''.join(items)}</ul>")


def _charts(runs: list[Run], metrics: list[str]) -> str:
  curves = {r.label: r.rows for r in runs}
  seeds = sorted({r.num_seeds for r in runs})
  spread = ("one seed: no spread" if seeds == [1] else
            f"mean and std over {'/'.join(map(str, seeds))} seeds shaded")
  figures = []
  for m in metrics:
    title = runs_lib.DESCRIPTIONS.get(m, m)
    theory = any(f"theory_{m}" in r.rows[0] for r in runs)
    caption = f"{m}{' (closed-form theory dashed)' if theory else ''}"
    figures.append(f"<figure>{_img(plots.metric_png(curves, m, title), m)}"
                   f"<figcaption>{html.escape(caption)}</figcaption></figure>")
  return f"<h2>Metrics per generation ({spread})</h2><div class=\"charts\">{''.join(figures)}</div>"


def _table(runs: list[Run], metrics: list[str]) -> str:
  rows = [f"<tr><td>{html.escape(m)}</td><td>{html.escape(r.label)}</td>"
          f"<td class=\"num\">{first}</td><td class=\"num\">{last}</td>{_change_cell(c, m)}</tr>"
          for m, r, c, first, last in runs_lib.changes(runs, metrics)]
  return ("<h2>First and last generation (mean ± std over seeds)</h2><table><tr><th>metric</th>"
          "<th>run</th><th>first</th><th>last</th><th>change</th></tr>"
          f"{''.join(rows)}</table>")


def _config_section(runs: list[Run]) -> str:
  differences = runs_lib.config_differences(runs)
  if not differences:
    return "<h2>Config</h2><p>The runs' configs are identical.</p>"
  head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
  body = "".join(f"<tr><td>{html.escape(k)}</td>" +
                 "".join(f"<td>{html.escape(json.dumps(v))}</td>" for v in values) + "</tr>"
                 for k, values in differences.items())
  return (f"<h2>What differs between the runs' configs</h2><table><tr><th>field</th>{head}</tr>"
          f"{body}</table><p>Every other field of config.json is the same in all runs.</p>")


def _timing_section(runs: list[Run]) -> str:
  rows = []
  for r in runs:
    seconds, how = runs_lib.wall_time(r.workdir)
    shown = "unknown" if seconds is None else runs_lib.format_seconds(seconds)
    rows.append(f"<tr><td>{html.escape(r.label)}</td><td class=\"num\">{shown}</td>"
                f"<td>{how}</td><td>{len(r.generations)} generations x {r.num_seeds} seeds</td>"
                f"<td>{html.escape(runs_lib.training_budget(r))}</td>"
                f"<td>{html.escape(str(r.workdir))}</td></tr>")
  return ("<h2>Wall time and training per run</h2><table><tr><th>run</th><th>wall time</th>"
          "<th>measured</th><th>size</th><th>training budget</th><th>workdir</th></tr>"
          f"{''.join(rows)}</table>")


def _title(runs: list[Run]) -> str:
  c = runs[0].config
  model, data = c.get("model", {}).get("name", "?"), c.get("data", {})
  what = data.get("name") or data.get("source", "?")
  return f"Model collapse: {model} on {what}, {' vs '.join(r.label for r in runs)}"


def render(runs: list[Run], out_dir: pathlib.Path) -> str:
  """The report's HTML text (``out_dir`` receives the 2-D scatter figure, if any)."""
  metrics = runs_lib.ordered_metrics(runs)
  title = _title(runs)
  gens = sorted({len(r.generations) for r in runs})
  seeds = sorted({r.num_seeds for r in runs})
  sub = (f"{'/'.join(map(str, gens))} generations, {'/'.join(map(str, seeds))} "
         f"seed{'s' * (seeds != [1])} per run; "
         f"runs: {', '.join(html.escape(str(r.workdir)) for r in runs)}")
  sections = [_samples_section(runs, out_dir), _glance(runs, metrics), _charts(runs, metrics),
              _table(runs, metrics), _config_section(runs), _timing_section(runs)]
  return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
          f"<h1>{html.escape(title)}</h1><p class=\"sub\">{sub}</p>{''.join(sections)}"
          "</body></html>\n")


def write(runs: list[Run], out_dir: pathlib.Path) -> pathlib.Path:
  """Writes ``out_dir/report.html``; returns its path."""
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / "report.html"
  path.write_text(render(runs, out_dir), encoding="utf-8")
  return path
