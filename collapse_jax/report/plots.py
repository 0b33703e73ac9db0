"""Plots of metric vs generation: one run (mean and spread over seeds, theory dashed), or
several runs side by side (replace vs accumulate vs ...)."""
from __future__ import annotations

import collections
import io
import pathlib

import numpy as np

NOT_METRICS = ("generation", "seed")


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display on servers and CI), imported on first
  use: a process that draws nothing (a run with figures off, a test) does not import it."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def metric_names(rows: list[dict]) -> list[str]:
  return sorted(k for k in rows[0] if k not in NOT_METRICS and not k.startswith("theory_"))


def by_generation(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
  """``(generations [G], values [G, seeds])`` of ``metric``."""
  table = collections.defaultdict(list)
  for r in rows:
    table[r["generation"]].append(r[metric])
  gens = np.array(sorted(table))
  return gens, np.array([table[g] for g in gens], np.float64)


def _draw(ax, rows, metric, label, color=None):
  gens, values = by_generation(rows, metric)
  mean, std = values.mean(1), values.std(1)
  line, = ax.plot(gens, mean, marker="o", ms=3, label=label, color=color)
  if values.shape[1] > 1:
    ax.fill_between(gens, mean - std, mean + std, alpha=0.2, color=line.get_color())
  if "theory_" + metric in rows[0]:
    _, theory = by_generation(rows, "theory_" + metric)
    ax.plot(gens, theory[:, 0], "--", color=line.get_color(), label=f"{label} theory")


def plot_run(rows: list[dict], out_dir: pathlib.Path, title: str) -> list[pathlib.Path]:
  """One PNG per metric in ``out_dir``; returns their paths."""
  plt = pyplot()
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for metric in metric_names(rows):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    _draw(ax, rows, metric, "measured (mean ± std over seeds)")
    ax.set(xlabel="generation", ylabel=metric, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / f"{metric}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def plot_metric(ax, runs: dict[str, list[dict]], metric: str, title: str | None = None) -> None:
  """One line per run (mean, spread over seeds shaded, theory dashed) on ``ax``."""
  for label, rows in runs.items():
    _draw(ax, rows, metric, label)
  ax.set(xlabel="generation", title=title or metric)
  ax.xaxis.get_major_locator().set_params(integer=True)


def plot_comparison(runs: dict[str, list[dict]], path: pathlib.Path,
                    metrics: list[str] | None = None) -> None:
  """A grid with one panel per metric (``metrics``, default: those common to all runs), one
  line per run."""
  plt = pyplot()
  common = metrics or sorted(set.intersection(*(set(metric_names(r)) for r in runs.values())))
  cols = min(3, len(common))
  nrows = -(-len(common) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.3 * nrows), squeeze=False)
  for ax, metric in zip(axes.flat, common):
    plot_metric(ax, runs, metric)
  for ax in axes.flat[len(common):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def metric_png(runs: dict[str, list[dict]], metric: str, title: str) -> bytes:
  """One metric's comparison as PNG bytes (for embedding in the HTML report)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.2, 3.4))
  plot_metric(ax, runs, metric, title)
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7, framealpha=0.5)  # where no place is free, the lines show through
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  return buffer.getvalue()
