"""Measures how far the golden metrics move when XLA:CPU compiles them differently, and sets
the golden test's tolerances from the largest move seen.

    python tools/measure_drift.py                      # measure, then write tolerances
    python tools/measure_drift.py --variants isa_avx   # measure some (others kept from file)
    python tools/measure_drift.py --tolerances-only    # tolerances from tests/golden_drift.json

Each variant is extra XLA_FLAGS on top of the test suite's (tests/conftest.py): a narrower
instruction set (`--xla_cpu_max_isa`: other vector widths, no FMA, other library kernels),
another work split (Eigen on one thread, or one CPU) or float reductions reordered (fast
math). Every golden entry runs in a fresh subprocess (XLA reads its flags once, when JAX
starts) through tools/make_golden.py's own ``golden_rows``; configs that are the same run
(aliases) run once. The per-config, per-metric maxima of the
absolute and relative difference from tests/golden_metrics.json go to
tests/golden_drift.json, and tests/golden_tolerances.json is rewritten from them:
rtol = MARGIN x the largest relative drift of that metric over all configs and variants,
at least FLOOR_RTOL; metrics in EXACT (counts and indices) are compared exactly.
"""
import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden_metrics.json"
DRIFT = ROOT / "tests" / "golden_drift.json"
TOLERANCES = ROOT / "tests" / "golden_tolerances.json"

# name -> (extra XLA_FLAGS, after the suite's own so they win; CPUs to run on, 0: all).
VARIANTS = {
    "baseline": ("", 0),  # this machine as the tests run: the drift from the golden machine
    "isa_avx2": ("--xla_cpu_max_isa=AVX2", 0),  # 256-bit vectors, no AVX-512 kernels
    "isa_avx": ("--xla_cpu_max_isa=AVX", 0),  # no FMA: every multiply-add rounds twice
    "isa_sse4_2": ("--xla_cpu_max_isa=SSE4_2", 0),  # 128-bit vectors, no FMA
    "eigen_1_thread": ("--xla_cpu_multi_thread_eigen=false", 0),  # dots unsplit
    "fast_math": ("--xla_cpu_enable_fast_math=true", 0),  # reassociated float reductions
    "one_cpu": ("", 1),  # XLA's thread pool, so its work split, sized for one core
}
# Measured by default (12-20 min each on 2 busy cores); the others on request (--variants;
# tests/golden_drift.json also holds isa_avx2 and one_cpu).
DEFAULT_VARIANTS = ("baseline", "isa_sse4_2", "eigen_1_thread", "fast_math")
MARGIN = 10.0  # tolerance = MARGIN x the largest drift measured
FLOOR_RTOL = 1e-6  # 8-17 float32 ulps: the least any float metric gets
# Counts and indices: exact whatever the kernels (a drift here is a bug, not rounding).
EXACT = ("generation", "seed", "train_examples", "train_frac_synthetic")


def _child(name: str, flags: str, cpus: int, out: str) -> None:
  """Runs golden entry ``name`` under the suite's XLA flags plus ``flags`` on the first
  ``cpus`` CPUs (0: all; XLA sizes its thread pool, so its work split, by them); rows to
  ``out``."""
  if cpus:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
  sys.path.insert(0, str(ROOT / "tools"))
  import make_golden  # appends the suite's XLA flags (conftest) before JAX starts
  import jax
  from jax._src import xla_bridge
  assert not xla_bridge.backends_are_initialized(), "XLA started before its flags were set"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
  # Compiled here, under this variant: no executable from the suite's persistent cache (its
  # key holds the XLA flags, but not the CPUs a variant runs on).
  jax.config.update("jax_enable_compilation_cache", False)
  rows = make_golden.golden_rows(name)
  pathlib.Path(out).write_text(json.dumps(rows))


def _run_entry(name: str, flags: str, cpus: int = 0) -> list[dict]:
  """``name``'s golden rows from a fresh Python process under ``flags`` on ``cpus`` CPUs."""
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "rows.json"
    command = [sys.executable, __file__, "--child", name, f"--flags={flags}",
               f"--cpus={cpus}", "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _groups(names: list[str]) -> dict[str, list[str]]:
  """Golden entries grouped by the run that makes them (an alias is the same config)."""
  sys.path.insert(0, str(ROOT / "tools"))
  import make_golden
  groups: dict[str, list[str]] = {}
  for name in names:
    groups.setdefault(make_golden.golden_config(name).to_json(sort_keys=True), []).append(name)
  return {group[0]: group for group in groups.values()}


def compare(rows: list[dict], golden: list[dict]) -> dict[str, dict]:
  """Per metric of ``golden``: the largest absolute difference, the largest relative one
  (rows whose golden value is not 0) and the largest absolute one where it is 0."""
  if len(rows) != len(golden):
    raise ValueError(f"{len(rows)} rows against {len(golden)} golden rows")
  drift = {}
  for row, want in zip(rows, golden):
    for metric, value in want.items():
      got = row[metric]
      d = drift.setdefault(metric, {"abs": 0.0, "rel": 0.0, "abs_at_zero": 0.0})
      diff = abs(got - value)
      d["abs"] = max(d["abs"], diff)
      if value == 0:
        d["abs_at_zero"] = max(d["abs_at_zero"], diff)
      else:
        d["rel"] = max(d["rel"], diff / abs(value))
  return drift


def _dumps(drift: dict) -> str:
  """``drift`` as indented JSON with one line per metric (a diff shows what moved)."""
  text = json.dumps(drift, indent=1, sort_keys=True)
  return re.sub(r"\{\n\s*(\"abs\": [^\n]*,)\n\s*(\"abs_at_zero\": [^\n]*,)\n\s*"
                r"(\"rel\": [^\n]*)\n\s*\}", r"{\1 \2 \3}", text) + "\n"


def _machine() -> dict:
  """What the numbers were measured on: CPU model, its vector ISA flags, versions."""
  cpu, flags = platform.processor(), []
  try:
    info = dict(l.split(":", 1) for l in
                pathlib.Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines())
    info = {k.strip(): v.strip() for k, v in info.items()}
    cpu = f"{info['model name']} (family {info['cpu family']}, model {info['model']})"
    flags = [f for f in info["flags"].split() if f.startswith(("sse4", "avx", "fma", "amx"))]
  except (OSError, KeyError, ValueError):
    pass
  import flax, jax, jaxlib, numpy, optax
  return {"cpu": cpu, "cores": os.cpu_count(), "isa_flags": flags,
          "versions": {"python": platform.python_version(), "jax": jax.__version__,
                       "jaxlib": jaxlib.__version__, "numpy": numpy.__version__,
                       "flax": flax.__version__, "optax": optax.__version__}}


def _round_up(x: float) -> float:
  """``x`` rounded up to one significant digit (tolerances read as 2e-06, not 1.73e-06)."""
  if x <= 0:
    return 0.0
  scale = 10.0 ** math.floor(math.log10(x))
  return float(f"{math.ceil(x / scale - 1e-9) * scale:.1g}")


def tolerances(drift: dict, margin: float = MARGIN, floor_rtol: float = FLOOR_RTOL) -> dict:
  """{metric: {"rtol", "atol"}} covering MARGIN x every drift in ``drift["variants"]``."""
  worst: dict[str, dict] = {}
  for variant in drift["variants"].values():
    for entry in variant["drift"].values():
      for metric, d in entry.items():
        w = worst.setdefault(metric, {"rel": 0.0, "abs_at_zero": 0.0})
        w["rel"] = max(w["rel"], d["rel"])
        w["abs_at_zero"] = max(w["abs_at_zero"], d["abs_at_zero"])
  out = {}
  for metric, w in sorted(worst.items()):
    if metric in EXACT and not w["rel"] and not w["abs_at_zero"]:
      out[metric] = {"rtol": 0.0, "atol": 0.0}
      continue
    if metric in EXACT:
      print(f"warning: exact metric {metric} moved: {w}", file=sys.stderr)
    out[metric] = {"rtol": _round_up(max(margin * w["rel"], floor_rtol)),
                   "atol": _round_up(margin * w["abs_at_zero"])}
  return out


def write_tolerances(drift: dict, margin: float) -> None:
  TOLERANCES.write_text(json.dumps({
      "about": "Golden-metric tolerances (tests/test_configs.py): |got - golden| <= atol "
               "+ rtol * |golden|. Written by tools/measure_drift.py from "
               "tests/golden_drift.json: "
               f"rtol = {margin:g} x the largest relative drift of the metric over every "
               f"config and variant, at least {FLOOR_RTOL:g}; atol = {margin:g} x the largest "
               "drift where the golden value is 0. rtol = atol = 0: exact. A metric not "
               "listed is compared exactly.",
      "margin": margin, "floor_rtol": FLOOR_RTOL,
      "tolerances": tolerances(drift, margin)}, indent=1) + "\n")
  print(f"wrote {TOLERANCES.relative_to(ROOT)}")


def measure(variants: list[str], only: list[str] | None) -> dict:
  golden = json.loads(GOLDEN.read_text())
  drift = json.loads(DRIFT.read_text()) if DRIFT.exists() else {"variants": {}}
  names = [n for n in sorted(golden) if not only or n in only]
  groups = _groups(names)
  sys.path.insert(0, str(ROOT / "tests"))
  import conftest  # noqa: F401  (the suite's flags, recorded below)
  drift.update({
      "about": "How far tests/golden_metrics.json moves under other XLA:CPU kernels: per "
               "variant (extra XLA_FLAGS, CPUs; 0: all), golden entry and metric, the largest "
               "absolute difference, relative difference and absolute difference where the "
               "golden value is 0; seconds: the variant's wall time.",
      "suite_xla_flags": os.environ["XLA_FLAGS"]})
  machine = _machine()
  for variant in variants:
    (flags, cpus), start, result = VARIANTS[variant], time.time(), {}
    old = drift["variants"].get(variant, {}).get("drift", {}) if only else {}
    for first, same in groups.items():
      t = time.time()
      rows = _run_entry(first, flags, cpus)
      for name in same:
        result[name] = compare(rows, golden[name])
      moved = {m: d for m, d in result[first].items() if d["abs"]}
      print(f"{variant} {first} ({time.time() - t:.0f} s): "
            + (", ".join(f"{m} {d['rel']:.1e}" for m, d in moved.items()) or "bitwise"),
            flush=True)
    drift["variants"][variant] = {
        "command": f"python tools/measure_drift.py --variants {variant}",
        "flags": flags, "cpus": cpus, "seconds": round(time.time() - start),
        "machine": machine, "date": datetime.date.today().isoformat(),
        "drift": dict(sorted({**old, **result}.items()))}
    DRIFT.write_text(_dumps(drift))
  return drift


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                      choices=list(VARIANTS))
  parser.add_argument("--only", nargs="*", default=None, help="golden entries to measure")
  parser.add_argument("--margin", type=float, default=MARGIN)
  parser.add_argument("--tolerances-only", action="store_true")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--flags", default="", help=argparse.SUPPRESS)
  parser.add_argument("--cpus", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return _child(args.child, args.flags, args.cpus, args.out)
  if args.tolerances_only:
    drift = json.loads(DRIFT.read_text())
  else:
    drift = measure(args.variants, args.only)
  write_tolerances(drift, args.margin)


if __name__ == "__main__":
  main()
