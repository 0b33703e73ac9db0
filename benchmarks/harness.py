"""What every benchmark here shares: flags, process set-up, timing, interleaved paired rounds,
the environment record and the JSON record that benchmarks/README.md's table is made from.

A benchmark script keeps only its workloads and its target; the harness times and reports
them alike everywhere. A comparison (ours against PyTorch, or any A against B) runs in
interleaved rounds: every round runs each side once, in the same order, so that load from
other processes hits all sides alike. The figure is the median of the per-round ratios
(pairing cancels the drift of a shared machine's speed), beside each side's median and
spread (min, max) over the rounds, by wall clock and by process CPU time.

Environment (``describe``, ``line``): `collapse_jax.environment.describe()` (versions,
devices, CPU model and its vector extensions) plus what decides a CPU benchmark's speed and
is not in it: XLA_FLAGS, the instruction-set caps of torch's libraries, the thread counts,
the CPUs the process may run on, the load average (a figure taken with other processes on
the cores is not comparable: benchmarks/README.md) and, where torch is compared, torch's
version and the vector ISA its kernels dispatch to. Call it once XLA_FLAGS / NPROC are
final: it starts JAX's backend.

Record (``write``, with ``--json PATH``): {benchmark, target, headline (the figure the
README's table shows), figures, command (to repeat the run), date, machine, environment,
args}. benchmarks/table.py builds the README's table from benchmarks/results/*.json.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import pathlib
import shlex
import statistics
import sys
import tempfile
import time
from typing import Callable

import jax

from collapse_jax import environment, host_memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Environment variables that cap or size the CPU kernels of either framework.
CAPS = ("XLA_FLAGS", "NPROC", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
        "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# --isa: the variables that cap torch's libraries (read when they first run, hence the
# re-exec in `set_up`) and XLA's flag for the kernels it generates. XLA's matrix products
# (YNNPACK, Eigen) choose their instructions from CPUID and ignore the cap, so a capped
# ratio is an upper bound of the ratio on a real AVX2 CPU (benchmarks/README.md).
ISA_CAPS = {"avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                      "ONEDNN_MAX_CPU_ISA": "AVX2"}, "--xla_cpu_max_isa=AVX2")}


# ----------------------------------------------------------------------------------------
# Flags and process set-up.


def parser(doc: str, rounds: int | None = None, threads: int | None = None,
           malloc: bool = False, isa: bool = False,
           rounds_alias: str | None = None) -> argparse.ArgumentParser:
  """The flags benchmarks share: ``--json`` always; ``--rounds`` and ``--threads`` where the
  script gives a default; ``--malloc`` and ``--isa`` where asked for. The description is the
  first line of the script's docstring; the script adds its own workload flags."""
  ap = argparse.ArgumentParser(description=doc.split("\n")[0])
  ap.add_argument("--json", default="", metavar="PATH",
                  help="also write the record (figures, environment, command, date) here; "
                  "benchmarks/table.py reads benchmarks/results/*.json")
  if rounds is not None:
    ap.add_argument("--rounds", *([rounds_alias] if rounds_alias else []), type=int,
                    default=rounds, help="interleaved rounds, each running every side once")
  if threads is not None:
    ap.add_argument("--threads", type=int, default=threads,
                    help="intra-op threads of both sides (torch.set_num_threads; XLA:CPU's "
                    "pool through NPROC; 1: robust on a shared, oversubscribed box)")
  if isa:
    ap.add_argument("--isa", choices=["native", *ISA_CAPS], default="native",
                    help="cap both sides' vector instructions (torch fully, XLA's generated "
                    "kernels only: an upper bound of the ratio on such a CPU)")
  if malloc:
    ap.add_argument("--malloc", choices=["collapse_jax", "glibc"], default="collapse_jax",
                    help="glibc's allocator settings: a run's (host_memory."
                    "reuse_host_temporaries) or its defaults")
  return ap


def command(argv: list[str] | None = None, implied: dict[str, str] | None = None) -> str:
  """How this run was started, to repeat it: the variables of CAPS that are set (less
  ``implied``, those a flag sets), the pinning (``taskset``, from this process's CPU
  affinity), and python with the arguments."""
  argv = sys.argv[1:] if argv is None else list(argv)
  script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
  allowed, count = sorted(os.sched_getaffinity(0)), os.cpu_count() or 1
  pin = [f"taskset -c {','.join(map(str, allowed))}"] if len(allowed) < count else []
  env = [f"{k}={shlex.quote(os.environ[k])}" for k in CAPS
         if k in os.environ and (implied or {}).get(k) != os.environ[k]]
  return " ".join(env + pin + ["python", script] + [shlex.quote(a) for a in argv])


# Flags that choose how a benchmark runs, not what it measures.
SETTINGS = ("help", "json", "rounds", "threads", "isa", "malloc", "profile")


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None,
          settings: tuple[str, ...] = ()) -> argparse.Namespace:
  """``ap.parse_args(argv)`` with ``command`` (the run as typed) and ``workload_changed``
  added, before `set_up` changes the environment. ``workload_changed``: the flags, other
  than SETTINGS and the script's ``settings``, that differ from their defaults, i.e. from
  the workload the target is stated for; `write` says so beside the headline."""
  args = ap.parse_args(argv)
  args.command = command(argv, ISA_CAPS.get(getattr(args, "isa", "native"), ({},))[0])
  args.workload_changed = [
      f"{a.option_strings[0]} {getattr(args, a.dest)}" for a in ap._actions
      if a.dest not in SETTINGS + settings and getattr(args, a.dest) != a.default]
  return args


def set_up(args: argparse.Namespace, torch=None, env: dict[str, str] | None = None) -> None:
  """Before either framework runs its first kernel: ``env`` and the ``--isa`` caps, which the
  libraries read when they start (so the process re-executes itself with them); for
  ``--threads`` XLA:CPU's pool (NPROC, read when JAX starts its backend; XLA_FLAGS has no
  thread count), Eigen off at 1 and torch's threads; glibc's allocator for ``--malloc``
  (torch shares the process's malloc)."""
  env, isa = dict(env or {}), getattr(args, "isa", "native")
  if isa != "native":
    env.update(ISA_CAPS[isa][0])
  if any(os.environ.get(k) != v for k, v in env.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})
  flags = os.environ.get("XLA_FLAGS", "").split()
  if isa != "native":
    flags.append(ISA_CAPS[isa][1])
  if getattr(args, "threads", None) is not None:
    if args.threads == 1:
      flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["NPROC"] = str(args.threads)
    if torch is not None:
      torch.set_num_threads(args.threads)
  if flags:
    os.environ["XLA_FLAGS"] = " ".join(dict.fromkeys(flags))
  if getattr(args, "malloc", None) == "collapse_jax":  # as a run sets it
    host_memory.reuse_host_temporaries()


# ----------------------------------------------------------------------------------------
# Environment.


def cpu_id() -> str:
  """``family F model M stepping S`` from /proc/cpuinfo: under a hypervisor the model name
  is often generic ("Intel(R) Xeon(R) Processor"); these numbers still name the generation."""
  fields = {}
  try:
    for row in open("/proc/cpuinfo").read().split("\n\n")[0].splitlines():
      key, _, value = row.partition(":")
      fields[key.strip()] = value.strip()
  except OSError:
    return ""
  return " ".join(f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model", "stepping")
                  if k in fields)


def describe(torch=None, packages: tuple[str, ...] = ()) -> dict:
  """`environment.describe()` and the settings above; ``torch``: the imported module, when
  the benchmark compares against it; ``packages``: more versions to record."""
  env = environment.describe()
  env["summary"] = environment.summary(env)
  env["cpu_id"] = cpu_id()
  env["cpu_count"] = os.cpu_count()
  env["cpus_allowed"] = len(os.sched_getaffinity(0))
  env["load_average_1m"] = round(os.getloadavg()[0], 2)
  env["env"] = {k: os.environ[k] for k in CAPS if k in os.environ}
  env["packages"] = {p: environment.package_version(p) for p in packages}
  if torch is not None:
    env["torch"] = torch.__version__
    env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    env["torch_threads"] = torch.get_num_threads()
    env["torch_float32_matmul_precision"] = torch.get_float32_matmul_precision()
  return env


def line(env: dict) -> str:
  """One line: CPU model [vector extensions], devices, versions; then torch and the caps."""
  parts = [env["summary"]] + ([f"CPU {env['cpu_id']}"] if env["cpu_id"] else [])
  if "torch" in env:
    parts.append(f"torch {env['torch']} ({env['torch_cpu_capability']} kernels, "
                 f"{env['torch_threads']} threads, fp32 matmul "
                 f"{env['torch_float32_matmul_precision']})")
  parts += [f"{p} {v}" for p, v in env["packages"].items()]
  pinned = (f" ({env['cpus_allowed']} allowed)"
            if env["cpus_allowed"] < env["cpu_count"] else "")
  parts.append(f"{env['cpu_count']} CPUs{pinned}, load average {env['load_average_1m']}")
  if env["env"]:
    parts.append(" ".join(f"{k}={v}" for k, v in env["env"].items()))
  return "; ".join(parts)


def environment_line(torch=None, packages: tuple[str, ...] = (), note: str = "") -> dict:
  """`describe` once, its `line` printed as ``environment{note}: ...``; returns it."""
  env = describe(torch, packages)
  print(f"environment{note}: {line(env)}", flush=True)
  return env


def machine(env: dict) -> str:
  """The README table's short name of the machine: CPU model and generation, its widest
  vector extensions, the CPUs the run could use, the load average when it started."""
  isa = env["cpu"]["isa"]
  widest = [name for flag, name in (("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in isa]
  widest = widest or [f.upper() for f in isa[-1:]]
  cpu = ", ".join(([env["cpu_id"]] if env["cpu_id"] else []) + widest)
  return (f"{env['cpu']['model']} ({cpu}); {env['cpus_allowed']} of {env['cpu_count']} CPUs; "
          f"load {env['load_average_1m']}")


# ----------------------------------------------------------------------------------------
# Timing.


def timed(fn: Callable) -> tuple[object, float, float]:
  """Calls ``fn()`` once and waits for its JAX results; (result, wall s, process CPU s)."""
  c0, t0 = time.process_time(), time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0, time.process_time() - c0


def rounds(sides: dict[str, Callable], n: int, warmup: int = 1) -> dict:
  """Calls each side ``warmup`` times (compilation, allocator, caches), then runs ``n``
  rounds, each calling every side once in the dict's order; prints a line a round.

  Returns {"wall": {side: [s per round]}, "cpu": {side: [...]}, "load": [1-minute load
  average after each round]}.
  """
  for fn in sides.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  wall, cpu, load = {k: [] for k in sides}, {k: [] for k in sides}, []
  for r in range(n):
    for name, fn in sides.items():
      _, w, c = timed(fn)
      wall[name].append(w)
      cpu[name].append(c)
    load.append(round(os.getloadavg()[0], 2))
    print(f"round {r}: " + ", ".join(f"{k} {wall[k][-1]:.3f}s (cpu {cpu[k][-1]:.3f}s)"
                                     for k in sides) + f"; load {load[-1]:.1f}", flush=True)
  return {"wall": wall, "cpu": cpu, "load": load}


def compare(times: dict, ours: str, theirs: str, work: float = 1,
            theirs_work: float | None = None) -> dict:
  """Figures of side ``ours`` against ``theirs`` from the same `rounds`.

  ``work``: the units (tokens, steps) one call of ``ours`` does, ``theirs_work`` those of
  ``theirs`` where they differ. Per side: seconds per call, median, min and max over rounds,
  and the rate (units per second at the median). The ratio is the median over rounds of
  that round's rate of ours / rate of theirs (> 1: ours faster), by wall clock and by CPU
  time (the work done, spin-waiting threads included).
  """
  theirs_work = work if theirs_work is None else theirs_work

  def side(name, units):
    wall = times["wall"][name]
    return {"work": units, "median_s": statistics.median(wall), "min_s": min(wall),
            "max_s": max(wall), "per_s": units / statistics.median(wall), "wall_s": wall,
            "cpu_s": times["cpu"][name]}

  def ratios(clock):
    return [(work / o) / (theirs_work / t)
            for o, t in zip(times[clock][ours], times[clock][theirs])]

  wall, cpu = ratios("wall"), ratios("cpu")
  return {"ours": ours, "theirs": theirs, "ratio": statistics.median(wall), "ratios": wall,
          "cpu_ratio": statistics.median(cpu), "cpu_ratios": cpu,
          "sides": {ours: side(ours, work), theirs: side(theirs, theirs_work)}}


def report(label: str, fig: dict, unit: str) -> str:
  """One line of a `compare`: each side's rate and its seconds per call (median, min-max),
  the median ratio with every round's, and the ratio by CPU time."""
  def side(name):
    s = fig["sides"][name]
    return (f"{name} {s['per_s']:.4g} {unit}/s ({s['median_s']:.3g} s a call, "
            f"{s['min_s']:.3g}-{s['max_s']:.3g})")
  return (f"{label}: {side(fig['ours'])} | {side(fig['theirs'])} | ratio median "
          f"{fig['ratio']:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in fig['ratios'])}) | "
          f"by CPU time {fig['cpu_ratio']:.2f}x")


def load_note(times: dict, threads: int) -> None:
  """Warns when the load average rose above the CPU count in multi-threaded rounds: other
  processes then shared the cores and the ratios say nothing about either library (torch's
  OpenMP threads suffer most; benchmarks/README.md, "Reading a figure")."""
  if times["load"] and max(times["load"]) > (os.cpu_count() or 1) and threads > 1:
    print(f"note: load average up to {max(times['load']):.1f} on {os.cpu_count()} CPUs: other "
          f"processes shared the cores, and multi-threaded ratios taken so are not comparable "
          f"(torch's OpenMP threads suffer most); compare `taskset -c 0 ... --threads 1` "
          f"instead (benchmarks/README.md)")


def op_times(fn: Callable) -> collections.Counter:
  """Traces one call of ``fn`` with JAX's profiler: nanoseconds per trace event name (XLA:CPU
  names events after its HLO ops), summed over threads, so ops on different threads
  overlap."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    jax.block_until_ready(fn())
    jax.profiler.stop_trace()
    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    trace = jax.profiler.ProfileData.from_file(path)
  ns = collections.Counter()
  for plane in trace.planes:
    for row in plane.lines:
      for event in row.events:
        ns[event.name] += event.duration_ns
  return ns


# ----------------------------------------------------------------------------------------
# Record.


def write(args: argparse.Namespace, benchmark: str, target: str, headline: str,
          figures: dict, env: dict) -> None:
  """With ``--json PATH``: the record of this run at PATH (see the module docstring). One
  file holds the last run of one benchmark in one setting; benchmarks/results/ holds those
  the README's table shows."""
  if not args.json:
    return
  if args.workload_changed:
    headline += f" [not the target's workload: {', '.join(args.workload_changed)}]"
  record = {"benchmark": benchmark, "target": target, "headline": headline,
            "figures": figures, "command": args.command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(env), "environment": env,
            "args": {k: v for k, v in vars(args).items()
                     if k not in ("command", "workload_changed")}}
  path = pathlib.Path(args.json)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2, default=str) + "\n")
  print(f"wrote {path}")


def verdict(met: bool) -> str:
  """``met`` / ``not met``, for headlines."""
  return "met" if met else "not met"
