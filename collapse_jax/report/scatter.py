"""The 2-D toys' signature figure: each generation's samples over the real density.

Reads the files the samples2d evaluator (evals/samples2d.py) writes,
``<workdir>/samples2d/generation_XXX.npz``, and draws one row of scatter plots over chosen
generations (one seed), the samples over contours of the real density (the known mixture of
a mode toy, else a Gaussian KDE of the held-out real points), with the same axes in every
panel, each titled with its generation and metrics.

  plot_run(workdir)                       -> <workdir>/plots/samples2d.png (one row)
  scatter_comparison(workdirs, out_png)   -> one row per run (e.g. replace / accumulate /
                                             mix), the columns the same generations

Axis limits come from the real points (padded by 15% of their range on each side), so
a collapsing or drifting model shows as samples leaving the contours; samples beyond the
axes are counted in the panel ("n off-axes"), never silently rescaled into view.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from collapse_jax.metrics import sample_distances as sd
from collapse_jax.report import runs as runs_lib
from collapse_jax.report.plots import pyplot

_GRID = 120  # density grid points per axis for the contours


def _label(workdir: str | pathlib.Path) -> str:
  """The run's policy from its config.json, else its folder's name."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    return pathlib.Path(workdir).name
  return runs_lib.policy_label(json.loads(path.read_text())["policy"])


def _load(path: pathlib.Path, seed: int) -> dict:
  with np.load(path) as f:
    data = {k: f[k] for k in f.files}
  seeds = data["samples"].shape[0]
  if not 0 <= seed < seeds:
    raise ValueError(f"{path} holds seeds 0..{seeds - 1}; seed {seed} is not among them.")
  out = {"samples": data["samples"][seed], "test": data["test"][seed],
         "metrics": {k[len("metric_"):]: float(v[seed]) for k, v in data.items()
                     if k.startswith("metric_")}}
  if "mode_centres" in data:
    out["mixture"] = (data["mode_centres"], float(data["mode_std"]))
  return out


def _limits(reals: list[np.ndarray]) -> tuple[float, float, float, float]:
  """Square, equal axes around all real points, padded by 15% of their range."""
  pts = np.concatenate(reals)
  lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
  centre, half = (lo + hi) / 2, float(np.max(hi - lo)) * 0.65
  return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def _density(first: dict, lims) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(xx, yy, density)`` of the real distribution on the axes' grid."""
  xx, yy = np.meshgrid(np.linspace(lims[0], lims[1], _GRID), np.linspace(lims[2], lims[3], _GRID))
  grid = np.stack([xx.ravel(), yy.ravel()], 1)
  if "mixture" in first:
    dens = sd.mixture_density(grid, *first["mixture"])
  else:
    dens = sd.kde_density(grid, first["test"])
  return xx, yy, dens.reshape(xx.shape)


def _title(generation: int, metrics: dict[str, float]) -> str:
  lines = [f"generation {generation}"]
  if "energy_distance" in metrics:
    lines.append(f"energy {metrics['energy_distance']:.3f} "
                 f"(floor {metrics.get('energy_distance_floor', np.nan):.3f})")
  if "modes_covered" in metrics:
    lines.append(f"modes {metrics['modes_covered']:.0f}, "
                 f"off-mode {100 * metrics['off_mode_fraction']:.0f}%")
  return "\n".join(lines)


def _figure(rows: list[tuple[str, dict[int, dict]]], generations: list[int],
            out_png: pathlib.Path) -> pathlib.Path:
  """Draws ``rows`` of ``(label, {generation: loaded npz})`` over ``generations``."""
  lims = _limits([next(iter(r.values()))["test"] for _, r in rows])
  cols = len(generations)
  plt = pyplot()
  fig, axes = plt.subplots(len(rows), cols, figsize=(2.4 * cols + 0.4, 2.9 * len(rows)),
                           squeeze=False, layout="constrained")
  for r, (label, data) in enumerate(rows):
    xx, yy, dens = _density(next(iter(data.values())), lims)
    for c, g in enumerate(generations):
      ax = axes[r, c]
      ax.contour(xx, yy, dens, levels=6, colors="0.55", linewidths=0.6)
      if g in data:
        pts = data[g]["samples"]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.6, color="C0", linewidths=0)
        off = int(np.sum((pts[:, 0] < lims[0]) | (pts[:, 0] > lims[1])
                         | (pts[:, 1] < lims[2]) | (pts[:, 1] > lims[3])))
        if off:
          ax.text(0.03, 0.03, f"{off} off-axes", transform=ax.transAxes, fontsize=6,
                  color="C3")
        ax.set_title(_title(g, data[g]["metrics"]), fontsize=7)
      else:
        ax.set_title(f"generation {g}\n(not run)", fontsize=7)
      ax.set(xlim=lims[:2], ylim=lims[2:], aspect="equal", xticks=[], yticks=[])
    axes[r, 0].set_ylabel(label, fontsize=9)
  out_png = pathlib.Path(out_png)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return out_png


def plot_run(workdir: str | pathlib.Path, out_png: str | pathlib.Path | None = None, *,
             generations: list[int] | None = None, seed: int = 0, columns: int = 6
             ) -> pathlib.Path | None:
  """One row of scatter plots of ``workdir``'s samples (seed ``seed``) over ``generations``
  (default: up to ``columns`` evenly spaced, first and last included); writes ``out_png``
  (default ``<workdir>/plots/samples2d.png``) and returns it, or None when the run has no
  samples2d files yet."""
  files = runs_lib.generation_files(workdir, "samples2d", "npz")
  if not files:
    return None
  gens = generations if generations is not None else runs_lib.choose_generations(files, columns)
  data = {g: _load(files[g], seed) for g in gens if g in files}
  if not data:
    raise ValueError(f"{workdir} has no samples2d files for generations {gens}.")
  out = out_png or pathlib.Path(workdir) / "plots" / "samples2d.png"
  return _figure([(_label(workdir), data)], gens, pathlib.Path(out))


def scatter_comparison(workdirs: list[str | pathlib.Path], out_png: str | pathlib.Path, *,
                       generations: list[int] | None = None, seed: int = 0, columns: int = 6,
                       labels: list[str] | None = None) -> pathlib.Path:
  """One row per run in ``workdirs`` (labelled by policy from its config.json unless
  ``labels`` are given), one column per generation, the same axes everywhere.

  For the report: call it with the workdirs of the compared runs (same toy) and a PNG path;
  it returns that path. Generations default to up to ``columns`` evenly spaced over those
  every run has (first and last included); seed ``seed`` of each run is drawn. Raises
  FileNotFoundError when a workdir has no ``samples2d/`` files (a run without the samples2d
  evaluator, or not started).
  """
  workdirs = [pathlib.Path(w) for w in workdirs]
  files = [runs_lib.generation_files(w, "samples2d", "npz") for w in workdirs]
  missing = [str(w) for w, f in zip(workdirs, files) if not f]
  if missing:
    raise FileNotFoundError(f"No samples2d files (samples2d/generation_*.npz) in "
                            f"{', '.join(missing)}; run with config.evals.samples2d set.")
  if generations is None:
    common = set.intersection(*(set(f) for f in files))
    generations = runs_lib.choose_generations(common or set().union(*files), columns)
  labels = labels or [_label(w) for w in workdirs]
  rows = [(label, {g: _load(f[g], seed) for g in generations if g in f})
          for label, f in zip(labels, files)]
  empty = [label for label, data in rows if not data]
  if empty:
    raise ValueError(f"Runs {', '.join(empty)} have none of generations {generations}.")
  return _figure(rows, generations, pathlib.Path(out_png))
