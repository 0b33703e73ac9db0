"""A run's workdir: what makes a folder a run, who may write it, and starting over safely.

Three promises, each checked here before the driver writes anything:
- A workdir is held by one run at a time: `hold` takes an advisory lock (``flock``) on
  ``<workdir>/.lock.<process index>``. The kernel drops it when the process ends, however it
  ends, so a killed run never blocks the next one; the processes of one multi-host run each
  hold their own index's file, so they share the workdir as they must (the driver then
  checks that they see one folder: processes given different folders, or each its own
  disk's, are refused instead of waiting for each other's checkpoints forever).
- ``--overwrite`` deletes only a run: a folder whose ``config.json`` is a collapse_jax config
  (a JSON object with ``model`` and ``policy``) and whose every entry is
  one a run writes (`RUN_ENTRIES`). Anything else in it (a user's notes, another tool's
  output) and the folder is refused, not emptied.
- Every refusal names the folder and why, in one sentence (`WorkdirError`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import re
import shutil
from typing import BinaryIO, Callable, Iterator

from collapse_jax.errors import UserError

# Every top-level entry a run writes (the driver, its checkpoints, the built-in evaluators;
# tests/test_workdir.py checks the package writes no other); `.lock.*` by prefix below.
RUN_ENTRIES = frozenset({
    "config.json", "metrics.jsonl", "metrics.jsonl.tmp", "environment.json",
    "environment.json.tmp", "timing.json",
    "checkpoints", "plots", "tensorboard", "samples", "samples2d", "stories", "tokenizer",
    "feature_classifier.npz"})
_RUN_PREFIXES = (".lock.",)


def write_atomically(path: pathlib.Path, write: Callable[[BinaryIO], None]) -> None:
  """``write(file)`` into a temporary file beside ``path``, then renamed onto it: a reader
  sees the old file or the new one, never half of one. The temporary name is this process's
  own, so processes that write the same file at once (a multi-host run's hosts, test workers
  sharing a cache), each with the same bytes, do not take each other's."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(tmp, "wb") as f:
      write(f)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


class WorkdirError(UserError):
  """A workdir this run may not use; the message is one sentence for the user."""


def check_path(workdir: str | os.PathLike) -> pathlib.Path:
  """``workdir`` as a path, refusing an empty one (an unset shell variable), a URL or a
  file."""
  if not str(workdir).strip():
    raise WorkdirError("--workdir is empty; give the folder the run should use.")
  problem = url_problem(str(workdir), "The workdir")
  if problem:
    raise WorkdirError(problem)
  path = pathlib.Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"The workdir {path} is a file, not a folder; choose another --workdir.")
  return path


def url_problem(path: str, what: str) -> str | None:
  """One sentence when ``path`` is a URL (``gs://bucket/run``), which pathlib would turn
  into the local folder ``gs:/bucket/run``; runs and reports go to a file system."""
  if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", path):
    return None
  return (f"{what} {path} is a URL; collapse_jax writes to a file system (a run's lock "
          "needs one): mount the bucket, e.g. with gcsfuse, and give the mounted path.")


def read_config(workdir: pathlib.Path) -> dict | None:
  """The config saved in ``workdir`` as a dict, None when there is none; a config.json that
  is not a collapse_jax config is refused."""
  saved = workdir / "config.json"
  if not saved.exists():
    return None
  try:
    config = json.loads(saved.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{saved} is not valid JSON ({e}); it is not a run this version can "
                       "continue: use another --workdir, or fix or remove the file.") from e
  if not _is_run_config(config):
    raise WorkdirError(f"{saved} is not a collapse_jax config; use another --workdir.")
  return config


def _is_run_config(config) -> bool:
  return isinstance(config, dict) and {"model", "policy"} <= set(config)


def foreign_entries(workdir: pathlib.Path) -> list[str]:
  """Top-level entries of ``workdir`` that no run writes, sorted."""
  return sorted(p.name for p in workdir.iterdir()
                if p.name not in RUN_ENTRIES and not p.name.startswith(_RUN_PREFIXES)
                and not _is_temporary_of_an_entry(p.name))


def _is_temporary_of_an_entry(name: str) -> bool:
  """Whether ``name`` is `write_atomically`'s temporary of a run entry, left by a killed run
  (``.<entry>.<pid>.tmp``)."""
  parts = name[1:].rsplit(".", 2)
  return (name.startswith(".") and len(parts) == 3 and parts[2] == "tmp"
          and parts[1].isdigit() and parts[0] in RUN_ENTRIES)


def check_clearable(workdir: pathlib.Path) -> None:
  """Refuses ``--overwrite`` of a folder that does not hold exactly a run: a collapse_jax
  config.json and only the entries a run writes (a missing folder is fine)."""
  if not workdir.exists() or not [p for p in workdir.iterdir()
                                  if not p.name.startswith(_RUN_PREFIXES)]:
    return  # nothing to lose
  try:
    config = json.loads((workdir / "config.json").read_text())
  except (OSError, ValueError):
    config = None
  if not _is_run_config(config):
    raise WorkdirError(
        f"--overwrite deletes only a collapse_jax run, and {workdir} holds none (no run's "
        "config.json); nothing was deleted: choose another --workdir.")
  foreign = foreign_entries(workdir)
  if foreign:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                      else "")
    raise WorkdirError(
        f"--overwrite deletes only a collapse_jax run, and {workdir} also holds {shown}; "
        "nothing was deleted: move them out or choose another --workdir.")


def clear_run(workdir: pathlib.Path) -> None:
  """Deletes the run in ``workdir`` after `check_clearable` (the folder and its locks stay)."""
  if not workdir.exists():
    return
  check_clearable(workdir)
  for entry in workdir.iterdir():
    if entry.name.startswith(_RUN_PREFIXES):
      continue
    if entry.is_dir() and not entry.is_symlink():
      shutil.rmtree(entry)
    else:
      entry.unlink()


@contextlib.contextmanager
def hold(workdir: pathlib.Path, process_index: int) -> Iterator[None]:
  """Creates ``workdir`` if needed and holds its lock for this process while the block runs;
  refuses, in one sentence, a workdir another live run holds."""
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / f".lock.{process_index}"
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirError(f"{workdir} is in use by another run (it holds {path.name}); wait "
                         "for it to finish or use another --workdir.") from None
    # The file stays empty: a refused run must leave every byte of the workdir as it was.
    yield
  finally:
    os.close(fd)  # releases the lock
