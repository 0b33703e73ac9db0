"""Paper-scale operability, measured on this CPU: weak scaling over fake devices, the cost of
a training-segment boundary, and the host memory of an accumulating pool.

    python benchmarks/scale.py [--only scaling,segments,memory] [--rounds 3] [--json PATH]

weak scaling   the MNIST VAE's training step (mnist_vae smoke net, XLA convs) at a fixed
               32 images per device on 1, 2, 4, 8 fake CPU devices (one process each,
               --xla_force_host_platform_device_count); fake devices share this machine's
               cores, so the figure of merit is the overhead t(n) / (n t(1)) (1.0: sharding
               costs nothing beyond the n-fold work)
segments       per-step time of a model and the time of one segment boundary (the Orbax
               checkpoint of the training state, its digest, the losses to host) at the
               default segment size (segments.segment_steps): boundary / segment
memory         peak RSS of an accumulate run (MNIST rows) over 10 generations vs the same
               run over 2: the growth of the peak per byte of pool growth (1.0: the pool
               is held once, nothing else grows with it); the median of ``--rounds`` pairs
Needs COLLAPSE_JAX_MNIST (../shared/data/mnist here).
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import harness  # benchmarks/, the script's directory

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

STEP_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
import conftest, jax, numpy as np
from collapse_jax import experiment, rng
from collapse_jax.loop.generation import CompiledLoop
from collapse_jax.parallel import mesh as mesh_lib
rng.configure_jax()
n = jax.device_count()
c = conftest.load_config("mnist_vae:replace")
c.model.update({{"batch_size": 32 * n, "steps": {steps}, "conv_impl": "xla"}})
c.n_real = c.n_synth = 64 * n
c.data.limit = None
c.mesh.data = n
c.num_generations, c.evals = 1, {{}}
mesh = mesh_lib.from_config(c.mesh)
layout = experiment.validate.policy_of(c).layout(1, multiple_of=n)
loop = experiment.build_loop(c, layout)
consts = loop.source.consts()
roots = rng.seed_keys(0, 1)
compiled = CompiledLoop(loop, mesh, consts, roots)
times = []
for rep in range(3):
  carry = compiled.init(consts, roots)
  jax.block_until_ready(carry)
  t = time.perf_counter()
  out = compiled.run(consts, carry, np.arange(1))
  jax.block_until_ready(out)
  times.append(time.perf_counter() - t)
print("RESULT" + json.dumps({{"devices": n, "seconds": sorted(times)[1]}}))
"""


def weak_scaling(steps: int = 20) -> dict:
  results = {}
  for n in (1, 2, 4, 8):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    out = subprocess.run([sys.executable, "-c", STEP_SCRIPT.format(tests=str(ROOT / "tests"),
                                                                   steps=steps)],
                         env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    results[n] = json.loads(out.stdout.split("RESULT")[-1])["seconds"]
  print(f"weak scaling ({steps} VAE steps of 32 images per device; the generation's "
        "sampling and eval included):")
  for n, t in results.items():
    print(f"  {n} device(s): {t:.3f} s  overhead t(n)/(n t(1)) = {t / (n * results[1]):.2f}")
  return {"steps": steps, "seconds": results,
          "overhead": {n: t / (n * results[1]) for n, t in results.items()}}


def segments() -> dict:
  import conftest
  import jax
  import numpy as np
  from collapse_jax import checkpoint, experiment, rng, segments
  from collapse_jax.loop.generation import CompiledLoop, SegmentedLoop
  from collapse_jax.parallel import mesh as mesh_lib
  rng.configure_jax()
  c = conftest.load_config("mnist_vae:replace", None)  # the full-size VAE
  c.model.update({"steps": 50_000, "epochs": 0.0})
  c.num_seeds, c.evals = 1, {}
  mesh = mesh_lib.from_config(c.mesh)
  layout = experiment.validate.policy_of(c).layout(c.num_generations, multiple_of=mesh.size)
  loop = experiment.build_loop(c, layout)
  consts = loop.source.consts()
  roots = rng.seed_keys(0, c.num_seeds)
  compiled = CompiledLoop(loop, mesh, consts, roots)
  default = segments.segment_steps(c, loop, compiled)
  probe = 20
  seg = SegmentedLoop(compiled, probe, c.sample_chunk_rows)
  carry = compiled.init(consts, roots)
  state, _ = seg.start(consts, carry, 0)
  first = jax.device_get(state["step"])
  state, losses = seg.segment(carry, state, 0, first, probe)  # compile
  jax.block_until_ready(losses)
  t = time.perf_counter()
  state, losses = seg.segment(carry, state, 0, first, 2 * probe)
  jax.block_until_ready(losses)
  per_step = (time.perf_counter() - t) / probe
  with tempfile.TemporaryDirectory() as d:
    ckpts = checkpoint.RunCheckpoints(pathlib.Path(d))
    times = []
    for i in range(5):
      t = time.perf_counter()
      np.asarray(jax.device_get(losses))
      ckpts.save_train(0, (i + 1) * default, state, {"first_step": [0], "total": 1, "curve": []})
      times.append(time.perf_counter() - t)
    ckpts.close()
  boundary = sorted(times)[2]
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  print(f"segment boundary (MNIST VAE, {params:,} parameters, batch 128): step "
        f"{per_step * 1e3:.1f} ms, default segment {default} steps = "
        f"{default * per_step:.1f} s, boundary {boundary * 1e3:.0f} ms = "
        f"{100 * boundary / (default * per_step):.2f}% of the segment")
  return {"parameters": params, "step_s": per_step, "segment_steps": default,
          "boundary_s": boundary, "boundary_share": boundary / (default * per_step)}


MEMORY_SCRIPT = r"""
import json, resource, sys, tempfile
sys.path.insert(0, {tests!r})
import conftest
from collapse_jax import experiment
c = conftest.load_config("mnist_vae:accumulate")
c.n_real = c.n_synth = {rows}
c.num_generations, c.generations_per_chunk, c.evals = {gens}, 1, {{}}
c.data.limit, c.data.n_test = None, 64
c.model.update({{"steps": 1, "batch_size": 16}})
with tempfile.TemporaryDirectory() as d:
  experiment.train_and_evaluate(c, d)
print("RESULT" + json.dumps({{"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def memory(rows: int = 60_000, gens: int = 10, base: int = 2, repeats: int = 3) -> dict:
  def peak(g: int) -> int:
    code = MEMORY_SCRIPT.format(tests=str(ROOT / "tests"), rows=rows, gens=g)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=3600)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.split("RESULT")[-1])["peak"]

  # The same run for ``base`` generations: everything but the pool's growth (the dataset,
  # compiled programs, sampling and checkpoint buffers) is in both. base = 2, not 1: what
  # only exists once a generation has finished (its compiled write and evaluation, the model
  # checkpoint's buffers) stays for the rest of a run, so a 1-generation run, whose peak
  # comes while generation 0 samples, has none of it. Heap reuse varies from run to run by
  # tens of MiB, so each pair is measured ``repeats`` times; the median is reported.
  pool = lambda g: (rows + g * rows) * (28 * 28 + 4 + 1)  # uint8 pixels, generation, real tag
  ratios = []
  for _ in range(repeats):
    small, large = peak(base), peak(gens)
    ratios.append((large - small) / (pool(gens) - pool(base)))
    print(f"memory (accumulate, {rows:,} real + {gens} x {rows:,} synthetic MNIST rows): pool "
          f"{pool(gens) / 2**20:.0f} MiB, peak RSS {large / 2**20:.0f} MiB; the same run for "
          f"{base} generations (pool {pool(base) / 2**20:.0f} MiB): {small / 2**20:.0f} MiB. Peak "
          f"growth / pool growth = {ratios[-1]:.2f} (peak / pool {large / pool(gens):.1f}: "
          f"the rest is the runtime's fixed cost)", flush=True)
  print(f"memory: peak growth / pool growth, median of {repeats}: {statistics.median(ratios):.2f} "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})")
  return {"rows": rows, "generations": gens, "base": base, "ratios": ratios,
          "ratio": statistics.median(ratios)}


TARGET = ("segment boundary < 2% of a segment; peak memory growth <= 1.2x the pool's; "
          "weak scaling near 1.0")


def main(argv=None):
  parser = harness.parser(__doc__)
  parser.add_argument("--only", default="scaling,segments,memory")
  parser.add_argument("--rounds", type=int, default=3,
                      help="memory: pairs of runs measured, the median reported")
  args = harness.parse(parser, argv, ("only",))
  os.environ.setdefault("COLLAPSE_JAX_MNIST", str(ROOT.parent / "shared" / "data" / "mnist"))
  parts = args.only.split(",")
  env = harness.environment_line(note=" (this process; each measurement runs in a child with "
                                 "the same versions)")
  figures, headline = {}, []
  if "scaling" in parts:
    figures["scaling"] = weak_scaling()
    headline.append("weak scaling " + ", ".join(
        f"{x:.2f}" for x in figures["scaling"]["overhead"].values()))
  if "segments" in parts:
    figures["segments"] = segments()
    share = figures["segments"]["boundary_share"]
    headline.append(f"boundary {100 * share:.2f}% ({harness.verdict(share < 0.02)})")
  if "memory" in parts:
    figures["memory"] = memory(repeats=args.rounds)
    ratio = figures["memory"]["ratio"]
    headline.append(f"memory growth {ratio:.2f} ({harness.verdict(ratio <= 1.2)})")
  harness.write(args, "scale", TARGET, "; ".join(headline), figures, env)


if __name__ == "__main__":
  main()
