"""Each generation's training-loss curve, for runs trained in segments."""
from __future__ import annotations

import pathlib

from collapse_jax.report.plots import pyplot


def plot_training_curves(curves: dict[str, list[list[float]]], path: pathlib.Path) -> None:
  """``curves``: generation (as a string) -> ``[[local step, loss mean over seeds], ...]``;
  one line per generation, darker for later ones."""
  plt = pyplot()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  gens = sorted(curves, key=int)
  cmap = plt.get_cmap("viridis")
  for i, g in enumerate(gens):
    if curves[g]:
      steps, losses = zip(*curves[g])
      ax.plot(steps, losses, color=cmap(i / max(1, len(gens) - 1)), label=f"generation {g}")
  ax.set_xlabel("step within the generation")
  ax.set_ylabel("training loss (window mean over seeds)")
  ax.legend(fontsize="small")
  fig.tight_layout()
  tmp = path.with_suffix(".tmp.png")
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  tmp.replace(path)
