"""A molecule run's local test loss as a curve over the noise scale sigma_t, per generation,
beside the floor (the loss of predicting no vectors): at which noise scales each generation
lost precision (launch/loss_by_noise.py draws it). The run's ``test_loss`` is this curve
averaged over time steps; ``test_loss_{small,mid,large}_noise`` are three coarse bins of it.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from collapse_jax import checkpoint, inference, validate
from collapse_jax.report.plots import pyplot


def generations(workdir: pathlib.Path, asked: list[str] | None) -> list[int]:
  """The checkpointed generations of ``workdir`` among ``asked`` (None: all)."""
  config = json.loads((workdir / "config.json").read_text())
  if config["model"]["name"] != "geodiff":
    raise validate.ConfigError(f"{workdir} is a {config['model']['name']} run; the loss by "
                               "noise scale is drawn for molecule (geodiff) runs.")
  ckpts = checkpoint.RunCheckpoints(workdir)
  done = ckpts.model_generations()
  ckpts.close()
  if not done:
    raise validate.ConfigError(f"{workdir} has no finished generation yet.")
  if asked is None:
    return sorted(done)
  if not all(g.isdigit() for g in asked):
    raise validate.ConfigError(f"--generations takes generation numbers such as 0,1,3, got "
                               f"{','.join(asked)}.")
  wanted = sorted({int(g) for g in asked})
  missing = [g for g in wanted if g not in done]
  if missing:
    raise validate.ConfigError(
        f"{workdir} has no model of generation {', '.join(map(str, missing))}; it has "
        f"{', '.join(map(str, sorted(done)))}.")
  return wanted


def curves(workdir: pathlib.Path, which: list[int], points: int) -> dict:
  """{"sigma": [P], "floor": [P], "generations": {g: [P]}} of the run in ``workdir``."""
  out, by_seed = {"generations": {}}, None
  for g in which:
    gen = inference.load_generation(workdir, g)
    if by_seed is None:  # one model and test set for all of a run's generations
      model = gen.loop.model
      sigmas = np.asarray(model.process.sigmas())
      wanted = np.geomspace(sigmas[0], sigmas[-1], points)
      ts = np.unique(np.clip(np.searchsorted(sigmas, wanted), 0, len(sigmas) - 1))
      by_seed = jax.jit(jax.vmap(lambda s, t: model.loss_by_noise(s["ema"], t, ts)))
      floor = jax.jit(jax.vmap(lambda t: model.loss_by_noise(None, t, ts)))
      out["sigma"] = sigmas[ts].tolist()
      out["floor"] = np.asarray(floor(gen.tasks)).mean(0).tolist()
    out["generations"][g] = np.asarray(by_seed(gen.state, gen.tasks)).mean(0).tolist()
  return out


def plot(runs: dict[str, dict], out: pathlib.Path) -> None:
  plt = pyplot()
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), sharey=True,
                           squeeze=False)
  for ax, (name, run) in zip(axes[0], runs.items()):
    gens = sorted(run["generations"])
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(gens), 1)))
    ax.plot(run["sigma"], run["floor"], "k--", label="predicting nothing")
    for colour, g in zip(colours, gens):
      ax.plot(run["sigma"], run["generations"][g], color=colour, marker=".",
              label=f"generation {g}")
    ax.set(xscale="log", yscale="log", title=name, xlabel="sigma_t (A)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  axes[0][0].set_ylabel("local test loss per atom")
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=120)
  plt.close(fig)
