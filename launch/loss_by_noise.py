"""A molecule run's local test loss as a curve over the noise scale sigma_t, one line per
generation, beside the floor (the loss of predicting no vectors): at which noise scales each
generation lost precision. The run's ``test_loss`` is this curve averaged over time steps;
``test_loss_{small,mid,large}_noise`` are three coarse bins of it.

    python launch/loss_by_noise.py runs/mol/replace runs/mol/accumulate \
        --out=loss_by_noise.png [--generations=0,1,2,3] [--points=24]

Writes ``--out`` (one panel per run, log-log) and its numbers beside it as ``.json``. Each
curve is the mean over the run's replicates, on the fixed test noise the run is scored with.
"""
import json
import pathlib

import jax
import numpy as np
from absl import flags

from collapse_jax import checkpoint, cli, experiment, validate

_OUT = flags.DEFINE_string("out", "loss_by_noise.png", "The plot (.png); numbers in .json.")
_GENERATIONS = flags.DEFINE_list("generations", None,
                                 "Generations to draw (default: every one checkpointed).")
_POINTS = flags.DEFINE_integer("points", 24, "Noise scales, log-spaced over the schedule.")


def generations(workdir: pathlib.Path, asked: list[str] | None) -> list[int]:
  """The checkpointed generations of ``workdir`` among ``asked`` (None: all)."""
  config = json.loads((workdir / "config.json").read_text())
  if config["model"]["name"] != "conformer_diffusion":
    raise validate.ConfigError(f"{workdir} is a {config['model']['name']} run; the loss by "
                               "noise scale is drawn for molecule (conformer_diffusion) runs.")
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


def curves(workdir: pathlib.Path, generations: list[int], points: int) -> dict:
  """{"sigma": [P], "floor": [P], "generations": {g: [P]}} of the run in ``workdir``."""
  out = {"generations": {}}
  for g in generations:
    gen = experiment.load_generation(workdir, g)
    model = gen.loop.model
    if "sigma" not in out:
      sigmas = np.asarray(model.process.sigmas())
      wanted = np.geomspace(sigmas[0], sigmas[-1], points)
      ts = np.unique(np.clip(np.searchsorted(sigmas, wanted), 0, len(sigmas) - 1))
      out["sigma"] = sigmas[ts].tolist()
    by_seed = jax.jit(jax.vmap(lambda s, t: model.loss_by_noise(s["ema"], t, ts)))
    out["generations"][g] = np.asarray(by_seed(gen.state, gen.tasks)).mean(0).tolist()
    if "floor" not in out:
      floor = jax.jit(jax.vmap(lambda t: model.loss_by_noise(None, t, ts)))
      out["floor"] = np.asarray(floor(gen.tasks)).mean(0).tolist()
  return out


def plot(runs: dict[str, dict], out: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
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


def main(argv):
  if len(argv) < 2:
    cli.fail("give one or more molecule workdirs, e.g. launch/loss_by_noise.py runs/mol/replace.")
  if _POINTS.value < 2:
    cli.fail(f"--points must be at least 2, got {_POINTS.value}.")
  out = pathlib.Path(_OUT.value)
  if out.suffix != ".png":
    cli.fail(f"--out must name a .png file, got {out}.")
  runs = {}
  for arg in argv[1:]:
    workdir = pathlib.Path(arg)
    if not (workdir / "config.json").exists():
      raise FileNotFoundError(f"{workdir} holds no run (no config.json).")
    runs[str(workdir)] = curves(workdir, generations(workdir, _GENERATIONS.value), _POINTS.value)
  plot(runs, out)
  out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
  print(f"Wrote {out} and {out.with_suffix('.json')}.")


if __name__ == "__main__":
  cli.run(main, positional=True)
