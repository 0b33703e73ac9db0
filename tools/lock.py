"""Writes requirements-lock.txt: the exact version of every package, direct or transitive,
that pyproject.toml's dependencies and extras (test, bench) resolve to, so that a fresh
machine installs what CI tested:

    python tools/lock.py [--upgrade]

pip resolves `-e ".[test,bench]"` without installing anything (--dry-run --report, with
--ignore-installed so the environment this runs in does not leak into the result). The
current pins go in as constraints, as pip-compile keeps them, so that adding a dependency
does not move every other version (the golden metrics are bitwise); where they conflict
with the changed pyproject, or with --upgrade, everything is re-resolved to the newest
releases pyproject allows. The lock records a digest of pyproject's dependency lists;
tests/test_lock.py fails when they disagree.
"""
import argparse
import hashlib
import json
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements-lock.txt"
REFRESH = "python tools/lock.py"
DIGEST_PREFIX = "# pyproject-deps-sha256: "
# What CI runs, and so the only platform whose resolution the lock may record: wheels and
# environment markers differ elsewhere.
PLATFORM = ("Linux", "x86_64", (3, 11))


def _canonical(name: str) -> str:
  """PEP 503 normalisation, as packaging.utils.canonicalize_name (this module needs only the
  standard library, so that it runs before anything is installed)."""
  return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(path: pathlib.Path | None = None) -> dict[str, list[str]]:
  """pyproject's requirement strings: "" for project.dependencies, then one entry per extra."""
  project = tomllib.loads((path or PYPROJECT).read_text())["project"]
  groups = {"": list(project.get("dependencies", []))}
  groups.update({k: list(v) for k, v in project.get("optional-dependencies", {}).items()})
  return groups


def deps_digest(path: pathlib.Path | None = None) -> str:
  """sha256 of pyproject's dependency lists, blind to whitespace and to the order of the
  requirements within a list (neither changes what pip resolves)."""
  groups = {k: sorted("".join(r.split()) for r in v)
            for k, v in project_requirements(path).items()}
  return hashlib.sha256(json.dumps(groups, sort_keys=True).encode()).hexdigest()


def read_lock(path: pathlib.Path | None = None) -> dict[str, str]:
  """{canonical name: version} of a lock file's pins; comment and blank lines skipped."""
  path = path or LOCK
  pins = {}
  if path.exists():
    for line in path.read_text().splitlines():
      line = line.split("#", 1)[0].strip()
      if line:
        name, _, version = line.partition("==")
        pins[_canonical(name.strip())] = version.strip()
  return pins


def _resolve(extras: list[str], constraints: pathlib.Path | None) -> dict[str, str]:
  """{canonical name: version} of everything pip would install for -e .[extras]."""
  with tempfile.TemporaryDirectory() as tmp:
    report = pathlib.Path(tmp) / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--quiet", "--report", str(report), "-e", f"{ROOT}[{','.join(extras)}]"]
    if constraints is not None:
      cmd += ["-c", str(constraints)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
      # pip's warnings (an unreadable find-links entry, ...) would bury its one error.
      lines = (proc.stderr + proc.stdout).splitlines()
      raise RuntimeError("\n".join(l for l in lines if not l.startswith("WARNING:")).strip())
    items = json.loads(report.read_text())["install"]
  project = _canonical(tomllib.loads(PYPROJECT.read_text())["project"]["name"])
  pins = {_canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
  pins.pop(project, None)
  return pins


def render(pins: dict[str, str], extras: list[str], digest: str) -> str:
  header = [
      "# The exact version of every package, direct or transitive, that CI tests: what",
      f"# pyproject.toml's dependencies and extras ({', '.join(extras)}) resolve to on Linux",
      "# x86-64 / CPython 3.11 (torch is the CPU build). Generated, do not edit; after",
      "# changing pyproject.toml's dependencies refresh it with",
      "#",
      f"#     {REFRESH}            (keeps the pins that still fit; --upgrade moves all)",
      "#",
      "# Install with the lock as constraints (packages not requested are ignored):",
      '#     pip install -c requirements-lock.txt -e ".[test]"',
      DIGEST_PREFIX + digest,
  ]
  return "\n".join(header + [f"{n}=={pins[n]}" for n in sorted(pins)]) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--upgrade", action="store_true",
                      help="ignore the current pins: newest releases pyproject allows")
  args = parser.parse_args(argv)
  here = (platform.system(), platform.machine(), sys.version_info[:2])
  if here != PLATFORM:
    print(f"error: the lock records CI's platform, {PLATFORM}; this is {here}",
          file=sys.stderr)
    return 2
  extras = sorted(k for k in project_requirements() if k)
  old = read_lock()
  print(f"resolving -e .[{','.join(extras)}] with pip (about a minute)...", file=sys.stderr)
  pins = None
  if old and not args.upgrade:
    try:
      pins = _resolve(extras, LOCK)
    except RuntimeError as e:
      # A pyproject change the old pins can't satisfy (a raised floor, a new package that
      # needs a newer dependency): resolve afresh rather than fail the one refresh command.
      print(f"the current pins conflict with pyproject.toml:\n{e}\n"
            "re-resolving every package to the newest release pyproject allows",
            file=sys.stderr)
  if pins is None:
    try:
      pins = _resolve(extras, None)
    except RuntimeError as e:
      print(f"error: pip could not resolve pyproject.toml:\n{e}", file=sys.stderr)
      return 1
  tmp = LOCK.with_suffix(".tmp")
  tmp.write_text(render(pins, extras, deps_digest()))
  tmp.replace(LOCK)
  # What moved, so the commit that refreshes the lock can say so.
  for name in sorted(old.keys() | pins.keys()):
    if old.get(name) != pins.get(name):
      print(f"  {name}: {old.get(name, '-')} -> {pins.get(name, '-')}", file=sys.stderr)
  print(f"wrote {LOCK.name}: {len(pins)} packages", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
