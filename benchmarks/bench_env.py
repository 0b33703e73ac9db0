"""The environment line every benchmark prints beside its figures (and writes into its JSON).

``describe()`` is `collapse_jax.environment.describe()` (versions, devices, CPU model and its
vector extensions) plus what decides a CPU benchmark's speed and is not in it: XLA_FLAGS,
the instruction-set caps of torch's libraries, the thread counts, the load average (a figure
taken with other processes on the cores is not comparable: see benchmarks/README.md) and,
where torch is compared, torch's (and transformers') version and the vector ISA its kernels
dispatch to. ``line(env)`` is one line of it: `collapse_jax.environment.summary` and the rest.

Call both after XLA_FLAGS / NPROC are final: `describe` starts JAX's backend.
"""
from __future__ import annotations

import importlib.metadata
import os

from collapse_jax import environment

# Environment variables that cap or size the CPU kernels of either framework.
CAPS = ("XLA_FLAGS", "NPROC", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
        "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


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
  env["load_average_1m"] = round(os.getloadavg()[0], 2)
  env["env"] = {k: os.environ[k] for k in CAPS if k in os.environ}
  env["packages"] = {p: _version(p) for p in packages}
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
  parts.append(f"{env['cpu_count']} CPUs, load average {env['load_average_1m']}")
  if env["env"]:
    parts.append(" ".join(f"{k}={v}" for k, v in env["env"].items()))
  return "; ".join(parts)
