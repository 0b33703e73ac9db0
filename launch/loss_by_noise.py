"""Draws a molecule run's local test loss against the noise scale sigma_t, one line per
generation, beside the loss of predicting nothing (collapse_jax/report/noise_curves.py).

    python launch/loss_by_noise.py runs/mol/replace runs/mol/accumulate \
        --out=loss_by_noise.png [--generations=0,1,2,3] [--points=24]

Writes ``--out`` (one panel per run, log-log) and its numbers beside it as ``.json``. Each
curve is the mean over the run's replicates, on fixed test noise.
"""
import json
import pathlib

from absl import flags

from collapse_jax import cli
from collapse_jax.report import noise_curves

_OUT = flags.DEFINE_string("out", "loss_by_noise.png", "The plot (.png); numbers in .json.")
_GENERATIONS = flags.DEFINE_list("generations", None,
                                 "Generations to draw (default: every one checkpointed).")
_POINTS = flags.DEFINE_integer("points", 24, "Noise scales, log-spaced over the schedule.")


def main(argv):
  if len(argv) < 2:
    cli.fail("give one or more molecule workdirs, e.g. "
             "launch/loss_by_noise.py runs/mol/replace.")
  if _POINTS.value < 2:
    cli.fail(f"--points must be at least 2, got {_POINTS.value}.")
  out = pathlib.Path(_OUT.value)
  if out.suffix != ".png":
    cli.fail(f"--out must name a .png file, got {out}.")
  asked = {}
  for arg in argv[1:]:  # every workdir checked before any model is loaded
    workdir = pathlib.Path(arg)
    if not (workdir / "config.json").exists():
      raise FileNotFoundError(f"{workdir} holds no run (no config.json).")
    asked[workdir] = noise_curves.generations(workdir, _GENERATIONS.value)
  runs = {str(w): noise_curves.curves(w, which, _POINTS.value) for w, which in asked.items()}
  noise_curves.plot(runs, out)
  out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
  print(f"Wrote {out} and {out.with_suffix('.json')}.")


if __name__ == "__main__":
  cli.run(main, positional=True)
