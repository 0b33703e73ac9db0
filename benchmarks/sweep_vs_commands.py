"""A sweep of 8 scalar values of one field as one `launch/sweep.py` command, against the same
8 points as 8 `launch/main.py` commands, one after another (issue 25's target: >= 3x).

The workload: `configs/kde_moons.py:replace,smoke` over `model.bandwidth` (8 values). Both
sides start cold (no persistent compilation cache) and write real runs; paired rounds
alternate the sides, as benchmarks/harness.py does for every benchmark. Both sides work in
subprocesses, so read the wall-clock ratio (the harness's CPU ratio counts this process).
The bandwidth is a scalar input of the compiled loop, so the sweep runs its 8 points side by
side as one program (vmapped over points and seeds): one compile and one process start
where the commands pay eight of each; the points' evaluators, the same program at every
point, compile once through the sweep's compilation cache. Neither side draws per-run
figures (a sweep's points do not by default; its report, which the sweep also writes, draws
them all).

    python benchmarks/sweep_vs_commands.py [--rounds 2] [--json PATH]
"""
import os
import pathlib
import subprocess
import sys
import tempfile

import harness  # benchmarks/, the script's directory

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/kde_moons.py:replace,smoke"
FIELD, VALUES = "model.bandwidth", ("0.1", "0.15", "0.2", "0.3", "0.4", "0.5", "0.7", "1.0")
TARGET = "one sweep command >= 3x faster than its 8 points as separate commands"


def _run(args: list[str]) -> None:
  # The same work on both sides: the sweep's points skip their own figures (its report draws
  # them all), so the commands skip theirs.
  env = dict(os.environ, COLLAPSE_JAX_PLOTS="0")
  out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       env=env)
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])


def sweep(root: pathlib.Path) -> None:
  _run(["launch/sweep.py", f"--config={CONFIG}", f"--sweep={FIELD}={','.join(VALUES)}",
        f"--workdir={root / 'sweep'}", "--overwrite"])


def commands(root: pathlib.Path) -> None:
  for value in VALUES:
    _run(["launch/main.py", f"--config={CONFIG}", f"--config.{FIELD}={value}",
          f"--workdir={root / 'commands' / value}", "--overwrite"])


def main(argv=None) -> int:
  args = harness.parse(harness.parser(__doc__, rounds=2), argv)
  harness.set_up(args)
  env = harness.environment_line()
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    times = harness.rounds({"sweep": lambda: sweep(root), "commands": lambda: commands(root)},
                           args.rounds, warmup=0)
  fig = harness.compare(times, "sweep", "commands")
  print(harness.report("sweep vs separate commands", fig, "runs"))
  headline = (f"8 points: {fig['ratio']:.2f}x faster as one sweep "
              f"({harness.verdict(fig['ratio'] >= 3)})")
  print(headline)
  harness.write(args, "sweep_vs_commands", TARGET, headline, fig, env)
  return 0


if __name__ == "__main__":
  sys.exit(main())
