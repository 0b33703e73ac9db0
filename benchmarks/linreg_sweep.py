"""The full reference linear-regression sweep (RESEARCH.md section 2), timed.

Every d in {1,3,10,32,100}, T in {10,32,100,316,1000} with T > d + 1, sigma2 in
{0.1,1,10}; 100 seeds; 100 generations; replace, accumulate, accumulate_subsample. One
compiled program per (d, T, policy): sigma2 is a runtime input, seeds are vmapped.
Programs are compiled ahead of time on a thread pool (XLA compiles release the GIL).

Baseline, in the same run: the reference code's approach, a NumPy loop over seeds and
generations fitting each generation by pseudo-inverse of the stacked design, timed on a
subset of seeds and extrapolated per seed; the ratio compares equal work.

    python benchmarks/linreg_sweep.py [--generations=100] [--seeds=100] [--baseline_seeds=3]
"""
import argparse
import concurrent.futures
import itertools
import os
import time

import jax
import numpy as np

from collapse_jax import presets, rng, validate
from collapse_jax.experiment import build_loop
from collapse_jax.loop.generation import CompiledLoop
from collapse_jax.parallel.mesh import make_mesh

DIMS, ROWS, SIGMA2 = (1, 3, 10, 32, 100), (10, 32, 100, 316, 1000), (0.1, 1.0, 10.0)
POLICIES = ("replace", "accumulate", "accumulate_subsample")


def numpy_reference(policy, d, t, sigma2, generations, seed):
  """One seed of the protocol as the reference scripts do it: pinv of the stacked design."""
  r = np.random.default_rng(seed)
  x = r.standard_normal((t, d))
  w_star = r.standard_normal(d)
  ys = [x @ w_star + np.sqrt(sigma2) * r.standard_normal(t)]
  errors = []
  for g in range(generations):
    if policy == "replace":
      xs, y = x, ys[-1]
    else:
      xs, y = np.tile(x, (len(ys), 1)), np.concatenate(ys)
      if policy == "accumulate_subsample" and g > 0:
        keep = r.choice(len(y), t, replace=False)
        xs, y = xs[keep], y[keep]
    w = np.linalg.pinv(xs) @ y
    errors.append(np.sum((w - w_star) ** 2))
    ys.append(x @ w + np.sqrt(sigma2) * r.standard_normal(t))
  return errors


def compiled_sweep(generations, seeds, mesh):
  """{(policy, d, t): (compiled loop, consts, init executable, run executable)}."""
  roots = rng.seed_keys(0, seeds)
  gens = np.arange(generations, dtype=np.int32)
  jobs = {}
  for policy, d, t in itertools.product(POLICIES, DIMS, ROWS):
    if t <= d + 1:
      continue
    c = presets.linreg(policy, None)
    c.data.dim, c.data.num_rows, c.n_real, c.n_synth = d, t, t, t
    c.num_generations, c.num_seeds = generations, seeds
    validate.check(c)
    loop = build_loop(c, validate.policy_of(c).layout(generations))
    consts = loop.source.consts()
    compiled = CompiledLoop(loop, mesh, consts, roots)
    jobs[(policy, d, t)] = (compiled, consts)

  def compile_one(item):
    key, (compiled, consts) = item
    init = compiled._init.lower(consts, roots).compile()
    run = compiled._run.lower(consts, compiled.abstract_carry, gens).compile()
    return key, (init, run)

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    executables = dict(pool.map(compile_one, jobs.items()))
  return roots, gens, {k: jobs[k] + executables[k] for k in jobs}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--generations", type=int, default=100)
  parser.add_argument("--seeds", type=int, default=100)
  parser.add_argument("--baseline_seeds", type=int, default=3)
  args = parser.parse_args()
  mesh = make_mesh(1)

  start = time.time()
  roots, gens, programs = compiled_sweep(args.generations, args.seeds, mesh)
  compiled_at = time.time()
  per_config, final = {}, {}
  for (policy, d, t), (compiled, consts, init, run) in programs.items():
    for sigma2 in SIGMA2:
      tick = time.time()
      c = dict(consts, sigma2=np.float32(sigma2))
      carry = init(c, roots)
      _, (metrics, _) = run(c, carry, gens)
      err = np.asarray(metrics["test_error"])
      per_config[(policy, d, t, sigma2)] = time.time() - tick
      final[(policy, d, t, sigma2)] = err[:, -1].mean()
  total = time.time() - start
  print(f"collapse_jax: {len(per_config)} runs ({len(programs)} programs), "
        f"{args.seeds} seeds x {args.generations} generations each")
  print(f"  total {total:.1f}s = compile {compiled_at - start:.1f}s "
        f"+ run {time.time() - compiled_at:.1f}s  (target < 120s)")

  # The baseline on a subset: per-seed NumPy time, extrapolated to the same seeds.
  print("\nsubset (sigma2=1): numpy reference vs collapse_jax, same seeds and generations")
  print(f"{'policy':22s} {'d':>4s} {'T':>5s} {'numpy s':>10s} {'jax s':>8s} {'ratio':>7s}")
  for policy in POLICIES:
    for d, t in ((10, 100), (32, 316), (100, 1000)):
      tick = time.time()
      for s in range(args.baseline_seeds):
        numpy_reference(policy, d, t, 1.0, args.generations, s)
      numpy_s = (time.time() - tick) / args.baseline_seeds * args.seeds
      jax_s = per_config[(policy, d, t, 1.0)]
      print(f"{policy:22s} {d:4d} {t:5d} {numpy_s:10.1f} {jax_s:8.2f} {numpy_s / jax_s:6.0f}x")
  print("\nfinal-generation test error / (sigma2 d / (T-d-1)), sigma2=1, d=10, T=100:")
  for policy in POLICIES:
    print(f"  {policy:22s} {final[(policy, 10, 100, 1.0)] / (10 / 89):.3f}")


if __name__ == "__main__":
  main()
