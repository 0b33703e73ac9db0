"""Many launcher command lines, each in its own process, for the price of one interpreter.

``run_many([(argv, cwd), ...])`` starts one Python that imports what the launchers import
(absl, ml_collections, JAX, collapse_jax: ~2 s of a 2-core machine per process), then forks
one child per command line. Each child runs ``python <argv...>`` as the interpreter would
(``runpy`` with ``__name__ == "__main__"``, ``sys.argv``, ``sys.path[0]`` the script's
folder, a fresh absl flag registry) and keeps its own exit status, stdout and stderr: the
process boundary the tests check (exit 2, one ``error:`` line, no traceback) is real; only
the start-up is shared. JAX's backend is not started before the fork (importing JAX does
not start it), so every child starts its own, as a fresh process would.

For command lines that are refused or finish quickly; a run that trains belongs in its own
``subprocess.run``.
"""
import atexit
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import traceback

_MARK = "LAUNCHER_BATCH_RESULTS"


def run_many(cases, env=None, timeout=300) -> list[subprocess.CompletedProcess]:
  """``cases``: ``(argv, cwd)`` pairs, ``argv`` what follows ``python`` (a script first).
  Returns their results in order, as ``subprocess.run(..., capture_output=True,
  text=True)`` would."""
  cases = [([str(a) for a in argv], str(cwd)) for argv, cwd in cases]
  out = subprocess.run([sys.executable, __file__], input=json.dumps(cases), env=env,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0 and _MARK in out.stdout, out.stderr[-3000:]
  return [subprocess.CompletedProcess([sys.executable, *argv], r["returncode"], r["stdout"],
                                      r["stderr"])
          for (argv, _), r in zip(cases, json.loads(out.stdout.split(_MARK)[-1]))]


def _child(argv, cwd, out_path, err_path):
  """Runs ``python argv...`` in this (forked) process; never returns."""
  code = 1
  try:
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
      f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(f, fd)
      os.close(f)
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    try:
      runpy.run_path(argv[0], run_name="__main__")
      code = 0
    except SystemExit as e:  # as the interpreter maps it
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except BaseException:  # pylint: disable=broad-except  (an uncaught one: a traceback)
      traceback.print_exc()
      code = 1
    atexit._run_exitfuncs()  # pylint: disable=protected-access  (as interpreter exit does)
  finally:
    try:
      sys.stdout.flush()
      sys.stderr.flush()
    finally:
      os._exit(code)  # pylint: disable=protected-access  (not the parent's cleanup)


def _serve():
  cases = json.loads(sys.stdin.read())
  # What every launcher imports; JAX's backend is not started by importing it.
  import absl.app, absl.flags, absl.logging  # pylint: disable=import-outside-toplevel,multiple-imports,unused-import
  import ml_collections.config_flags  # pylint: disable=import-outside-toplevel,unused-import
  import collapse_jax.cli, collapse_jax.experiment  # pylint: disable=import-outside-toplevel,multiple-imports,unused-import
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  assert not xla_bridge._backends, "a backend started before the fork"  # pylint: disable=protected-access
  results = []
  # Not TemporaryDirectory: its clean-up is an exit function, which each child runs.
  tmp = tempfile.mkdtemp()
  try:
    for i, (argv, cwd) in enumerate(cases):
      out_path, err_path = os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err")
      sys.stdout.flush()
      sys.stderr.flush()
      pid = os.fork()
      if pid == 0:
        _child(argv, cwd, out_path, err_path)
      _, status = os.waitpid(pid, 0)
      with open(out_path) as o, open(err_path) as e:
        results.append({"returncode": os.waitstatus_to_exitcode(status), "stdout": o.read(),
                        "stderr": e.read()})
  finally:
    shutil.rmtree(tmp)
  print(_MARK + json.dumps(results))


if __name__ == "__main__":
  _serve()
