"""The software and hardware a result was computed on, recorded beside the result.

Results are bitwise only on the same machine kind, versions and device count (BUILD_NOTES,
"Determinism"). `describe` names all of those; every run keeps the environments it ran
under in ``<workdir>/environment.json``, and a resume under a different one says, in one
line, that the continuation is no longer bitwise. The benchmarks print the same description
beside their figures.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# The CPU features that select XLA:CPU's and oneDNN's kernels (and so the last bits).
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
              "amx_tile", "amx_bf16", "asimd", "sve")


def package_version(package: str) -> str | None:
  """The installed version of ``package``, or None."""
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu() -> dict:
  """``{"model": ..., "isa": [...]}`` of this host's CPU (Linux's /proc/cpuinfo; elsewhere
  the platform's name and no features)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      key, _, value = line.partition(":")
      key = key.strip()
      if key == "model name" and value.strip():
        model = value.strip()
      elif key in ("flags", "Features"):
        flags |= set(value.split())
  except OSError:
    pass
  return {"model": model, "isa": [f for f in _ISA_FLAGS if f in flags]}


def describe() -> dict:
  """Versions, devices and host CPU, as plain JSON values."""
  devices = jax.devices()
  return {
      "python": platform.python_version(),
      **{p: package_version(p) for p in PACKAGES},
      "platform": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "cpu": cpu(),
      "machine": platform.machine(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def summary(env: dict) -> str:
  """One line: CPU, its vector extensions, device and versions."""
  return (f"{env['cpu']['model']} [{' '.join(env['cpu']['isa']) or 'no vector flags'}], "
          f"{env['device_count']}x {env['device_kind']}, python {env['python']}, "
          + ", ".join(f"{p} {env[p]}" for p in PACKAGES))


def record(workdir: pathlib.Path, generation: int) -> str | None:
  """Adds this invocation's environment to ``<workdir>/environment.json`` (a list, one entry
  per environment the run has continued under, each with the generation it started at);
  returns a one-line notice when it differs from the last one, else None."""
  path = workdir / "environment.json"
  try:
    history = json.loads(path.read_text()) if path.exists() else []
  except ValueError:  # cut by a crash mid-write: start the record afresh
    history = []
  now = describe()
  last = history[-1]["environment"] if history else None
  if last == now:
    return None
  history.append({"from_generation": generation, "environment": now})
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(history, indent=2) + "\n")
  tmp.replace(path)
  if last is None:
    return None
  changed = ", ".join(f"{k} {last.get(k)} -> {now[k]}" for k in now if last.get(k) != now[k])
  return (f"This run continues under a different environment ({changed}); its results from "
          f"generation {generation} on are no longer bitwise those of an uninterrupted run.")
