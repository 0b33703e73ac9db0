"""requirements-lock.txt against pyproject.toml: every requirement pinned to a version it
allows, the lock regenerated since pyproject's dependencies last changed, and, on CI
(COLLAPSE_JAX_LOCKED=1), every package the test install pulls in at exactly its locked
version, so that what CI tested is what the lock gives a fresh machine."""
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import tomllib

import pytest
# pytest itself depends on packaging, so it is always importable here.
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
lock_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_tool)

# The extras CI installs (.ci/run: pip install -c requirements-lock.txt -e ".[test]").
CI_EXTRAS = ("test",)
REFRESH = (f"pyproject.toml and {lock_tool.LOCK.name} disagree: run `{lock_tool.REFRESH}` "
           "and commit the lock")


def _pins() -> dict[str, str]:
  return lock_tool.read_lock()


def _applies(req: Requirement, extra: str) -> bool:
  return req.marker is None or req.marker.evaluate({"extra": extra})


def test_every_pyproject_requirement_is_pinned_within_its_specifier():
  pins = _pins()
  wrong = []
  for group, reqs in lock_tool.project_requirements().items():
    for text in reqs:
      req = Requirement(text)
      if not _applies(req, group):
        continue  # a requirement for another platform: the lock is Linux x86-64's
      pinned = pins.get(canonicalize_name(req.name))
      if pinned is None:
        wrong.append(f"{text!r} ({group or 'dependencies'}) is not in the lock")
      elif not req.specifier.contains(pinned, prereleases=True):
        wrong.append(f"{text!r} ({group or 'dependencies'}) but the lock pins {pinned}")
  assert not wrong, REFRESH + ":\n" + "\n".join(wrong)


def test_lock_lines_are_sorted_exact_pins():
  lines = [l for l in lock_tool.LOCK.read_text().splitlines()
           if l.strip() and not l.startswith("#")]
  assert lines, "the lock pins nothing"
  names = []
  for line in lines:
    m = re.fullmatch(r"([a-z0-9]+(?:-[a-z0-9]+)*)==(\S+)", line)
    assert m, f"not a canonical `name==version` pin: {line!r}"
    Version(m[2])  # raises on a version pip would not read
    names.append(m[1])
  assert names == sorted(set(names)), "pins are not sorted or repeat a name"
  # Pinning the project itself would fight the `-e .` that installs it.
  project = tomllib.loads(lock_tool.PYPROJECT.read_text())["project"]["name"]
  assert canonicalize_name(project) not in names


def test_lock_digest_matches_pyproject():
  recorded = [l[len(lock_tool.DIGEST_PREFIX):].strip()
              for l in lock_tool.LOCK.read_text().splitlines()
              if l.startswith(lock_tool.DIGEST_PREFIX)]
  assert len(recorded) == 1, f"the lock has no single {lock_tool.DIGEST_PREFIX!r} line"
  assert recorded[0] == lock_tool.deps_digest(), REFRESH


def _test_install_closure() -> dict[str, str | None]:
  """{name: installed version or None} of everything `pip install -e ".[test]"` requires,
  followed through the installed packages' own metadata (with the extras asked of them)."""
  groups = lock_tool.project_requirements()
  todo = [Requirement(t) for g in ("",) + CI_EXTRAS for t in groups.get(g, [])
          if _applies(Requirement(t), g)]
  seen, found = set(), {}
  while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    key = (name, frozenset(req.extras))
    if key in seen:
      continue
    seen.add(key)
    try:
      dist = importlib.metadata.distribution(req.name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
      continue
    found[name] = dist.version
    for text in dist.requires or []:
      sub = Requirement(text)
      if any(_applies(sub, e) for e in ("",) + tuple(req.extras)):
        sub.marker = None
        todo.append(sub)
  return found


@pytest.mark.skipif(os.environ.get("COLLAPSE_JAX_LOCKED") != "1",
                    reason="COLLAPSE_JAX_LOCKED=1 (CI sets it) checks that the environment "
                    "holds the locked versions; without it you may bring your own")
def test_environment_holds_the_locked_versions():
  pins = _pins()
  wrong = []
  for name, version in sorted(_test_install_closure().items()):
    if version is None:
      wrong.append(f"{name} is required but not installed")
    elif name not in pins:
      wrong.append(f"{name} {version} is installed but not in the lock")
    elif Version(version) != Version(pins[name]):
      wrong.append(f"{name} {version} is installed, the lock pins {pins[name]}")
  assert not wrong, (
      'install with `pip install -c requirements-lock.txt -e ".[test]"`, or if the lock is '
      f"stale, run `{lock_tool.REFRESH}`:\n" + "\n".join(wrong))
