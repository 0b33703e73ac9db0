"""Where XLA:CPU's host memory lives between calls (glibc's heap, trimmed at boundaries),
and how much memory a run's devices have: a run that could never fit is refused before it
starts, not killed by the OS part-way.

Changes no number, only the resident size and page faults of CPU runs.
"""
from __future__ import annotations

import ctypes
import os

import jax


def _libc():
  try:
    return ctypes.CDLL("libc.so.6")
  except OSError:  # not glibc (macOS, musl): nothing to trim
    return None


_LIBC = _libc()


def release_freed_host_memory() -> None:
  """Hands the C heap's free pages back to the OS (glibc's ``malloc_trim``).

  XLA:CPU allocates every array and temporary with malloc. Buffers under glibc's mmap
  threshold (which grows to 32 MiB after the first large frees) come from heaps that keep
  freed pages, so without this the resident size drifts up by tens of MiB a generation
  (benchmarks/scale.py --only memory, BUILD_NOTES). Called at chunk and generation
  boundaries; it takes milliseconds.
  """
  if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
    _LIBC.malloc_trim(0)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
# Free bytes glibc keeps at the top of its heap: room for one temporaries block (~54 MiB for
# the :cpu GeoDiff step). 2 GiB raised the MNIST memory benchmark's peak by ~350 MiB.
KEEP_FREE_BYTES = 64 * 2**20


def reuse_host_temporaries() -> None:
  """On the CPU backend, makes glibc serve large blocks from its heaps and keep their pages.

  XLA:CPU allocates one block for a program's temporaries on every call. Over glibc's mmap
  ceiling (32 MiB) that block is mmapped afresh each time and every 4 KiB page faults on
  first touch (a `:cpu` GeoDiff training step spent a third of its CPU time in page
  faults). With mmap off and the
  trim threshold at `KEEP_FREE_BYTES` the pages are reused; `release_freed_host_memory`
  still hands them back at chunk and generation boundaries. Changes no number, only where
  memory lives.
  """
  if _LIBC is not None and hasattr(_LIBC, "mallopt") and jax.default_backend() == "cpu":
    _LIBC.mallopt(M_MMAP_MAX, 0)
    _LIBC.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)


def capacity_bytes(devices) -> int | None:
  """The memory ``devices`` hold together: each accelerator's own (its allocator's limit);
  CPU devices share their process's host memory, counted once per process. None where a
  device does not say."""
  total, hosts = 0, set()
  for device in devices:
    if device.platform == "cpu":
      if device.process_index not in hosts:
        hosts.add(device.process_index)
        total += os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
      continue
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if not limit:
      return None
    total += limit
  return total


def nbytes(tree) -> int:
  """Bytes of the arrays (or shape-dtype structs) in ``tree``."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def too_large(need: int, what: str, devices, fix: str) -> str | None:
  """One sentence when ``need`` bytes (a lower bound of what ``what`` holds at once) exceed
  all the memory of ``devices`` (the run could never fit), else None."""
  have = capacity_bytes(devices)
  if have is None or need <= have:
    return None
  gib = lambda b: f"{b / 2**30:,.1f} GiB"
  return (f"{what} needs at least {gib(need)} at once, more than the {gib(have)} of memory "
          f"here; {fix}.")
