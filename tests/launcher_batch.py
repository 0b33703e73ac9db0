"""Processes that start warm: ``python ...`` command lines forked from an interpreter that
has already imported what they import (absl, ml_collections, JAX, collapse_jax: ~2 s of a
2-core machine per process).

- ``Popen(args, cwd=, env=)`` stands in for ``subprocess.Popen(args, stdout=PIPE,
  stderr=PIPE, text=True)`` and ``run(args, cwd=, env=, timeout=)`` for
  ``subprocess.run(args, capture_output=True, text=True)``, for ``args = [sys.executable,
  script | "-c", code, ...]``. One warm interpreter per test process (started on first use)
  forks each of them; a real subprocess is started instead where the command or its
  environment differs from the interpreter's in a way a fork cannot honour (see `_warm_ok`).
- ``run_many([(argv, cwd), ...], env=)``: `run` of each, in turn, ``argv`` what follows
  ``python``.

Each child runs as the interpreter would (``runpy`` with ``__name__ == "__main__"``,
``sys.argv``, ``sys.path[0]`` the script's folder or the current one for ``-c``, a fresh absl
flag registry, the environment it was given) and has its own pid, exit status (a signal's
negative number included), stdout and stderr: the process boundary the tests check (exit
codes, one ``error:`` line, SIGKILL and SIGTERM, XLA's device count, several processes of
one run) is real; only the start-up is shared. JAX's backend is not started before the fork
(importing JAX does not start it), so every child starts its own, with its own XLA_FLAGS,
as a fresh process would.
"""
import atexit
import gc
import json
import os
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# Environment variables read when the interpreter, JAX or a library it loads starts (the
# warm interpreter has read them): a command given other values than it has runs as a
# real subprocess. Others (XLA_FLAGS, read when a backend starts; the package's own, read
# when it runs) are the child's own.
_START_VARS = ("PYTHON", "JAX_", "TF_", "LD_", "XLA_PYTHON", "TPU_", "CUDA")


def _warm_ok(args, env, warm_env) -> bool:
  if len(args) < 2 or args[0] != sys.executable or args[1].startswith("-") and args[1] != "-c":
    return False
  changed = {k for k in set(env) | set(warm_env) if env.get(k) != warm_env.get(k)}
  return not any(k.startswith(_START_VARS) for k in changed)


class _Server:
  """The warm interpreter of this test process: forks a child per request, reports each
  child's pid and, once reaped, its exit status."""

  def __init__(self):
    self.env = dict(os.environ)  # the warm interpreter's
    self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1)
    self.lock = threading.Condition()
    self.replies = {}
    self.next_id = 0
    threading.Thread(target=self._read, daemon=True).start()
    atexit.register(self.close)

  def close(self):
    """Ends the server (at the end of its input, after its children) and reaps it, so its
    children's CPU time counts as this process's children's."""
    self.proc.stdin.close()
    self.proc.wait(timeout=300)

  def _read(self):
    for line in self.proc.stdout:
      if line.startswith("{"):
        reply = json.loads(line)
        with self.lock:
          self.replies.setdefault(reply["id"], {}).update(reply)
          self.lock.notify_all()

  def reply(self, i: int, key: str, timeout: float | None):
    with self.lock:
      if not self.lock.wait_for(lambda: key in self.replies.get(i, {}) or
                                self.proc.poll() is not None, timeout):
        raise subprocess.TimeoutExpired("warm child", timeout)
      assert key in self.replies.get(i, {}), "the warm interpreter died"
      return self.replies[i][key]

  def start(self, argv, cwd, env, out_path, err_path) -> int:
    with self.lock:
      i, self.next_id = self.next_id, self.next_id + 1
      self.proc.stdin.write(json.dumps({"id": i, "argv": argv, "cwd": cwd, "env": env,
                                        "out": out_path, "err": err_path}) + "\n")
    return i


_SERVER = None


class WarmProcess:
  """A forked child with `subprocess.Popen`'s methods the tests use."""

  def __init__(self, server: _Server, args, cwd=None, env=None):
    self.args, self.returncode, self._server = args, None, server
    self._tmp = tempfile.mkdtemp()
    self._paths = [os.path.join(self._tmp, name) for name in ("out", "err")]
    self._id = server.start(args[1:], str(cwd or os.getcwd()),
                            dict(env if env is not None else os.environ), *self._paths)
    self.pid = self._server.reply(self._id, "pid", 120)

  def poll(self):
    if self.returncode is None:
      with self._server.lock:
        self.returncode = self._server.replies[self._id].get("status")
    return self.returncode

  def wait(self, timeout=None):
    if self.returncode is None:
      self.returncode = self._server.reply(self._id, "status", timeout)
    return self.returncode

  def send_signal(self, sig):
    if self.poll() is None:
      os.kill(self.pid, sig)

  def kill(self):
    self.send_signal(signal.SIGKILL)

  def communicate(self, timeout=None):
    self.wait(timeout)
    try:
      with open(self._paths[0]) as out, open(self._paths[1]) as err:
        return out.read(), err.read()
    finally:
      shutil.rmtree(self._tmp, ignore_errors=True)


def Popen(args, cwd=None, env=None):  # pylint: disable=invalid-name  (subprocess's name)
  """``subprocess.Popen(args, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True)``,
  forked warm where it can be."""
  global _SERVER
  args = [str(a) for a in args]
  if _SERVER is None or _SERVER.proc.poll() is not None:
    _SERVER = _Server()
  if _warm_ok(args, env if env is not None else os.environ, _SERVER.env):
    return WarmProcess(_SERVER, args, cwd, env)
  return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def run(args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
  """``subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
  timeout=timeout)``, forked warm where it can be."""
  proc = Popen(args, cwd, env)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_many(cases, env=None, timeout=300) -> list[subprocess.CompletedProcess]:
  """``cases``: ``(argv, cwd)`` pairs, ``argv`` what follows ``python`` (a script first),
  run in turn (`run`). Returns their results in order."""
  return [run([sys.executable, *argv], cwd, env, timeout) for argv, cwd in cases]


def _child(argv, cwd, out_path, err_path, env):
  """Runs ``python argv...`` in this (forked) process, under ``env``; never returns."""
  code = 1
  try:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, out_path), (2, err_path)):
      f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(f, fd)
      os.close(f)
    try:
      if argv[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
      else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
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


def _warm_up():
  """Imports what every launcher imports; JAX's backend is not started by importing it."""
  import absl.app, absl.flags, absl.logging  # pylint: disable=import-outside-toplevel,multiple-imports,unused-import
  import ml_collections.config_flags  # pylint: disable=import-outside-toplevel,unused-import
  import collapse_jax.cli, collapse_jax.experiment  # pylint: disable=import-outside-toplevel,multiple-imports,unused-import
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  assert not xla_bridge._backends, "a backend started before the fork"  # pylint: disable=protected-access
  # As tests/conftest.py tunes the test processes' collector (GC_THRESHOLDS): rarer young
  # collections, and the imports frozen out of the children's scans (which would also copy
  # every page they touch).
  gc.set_threshold(10_000, 50, 1000)
  gc.collect()
  gc.freeze()


def _serve():
  """Forks a child per request line on stdin; prints ``{"id", "pid"}`` when it starts and
  ``{"id", "status"}`` when it is reaped. Ends, after its children, at the end of stdin."""
  _warm_up()
  running, open_input, pending = {}, True, ""
  while open_input or running:
    if open_input and select.select([0], [], [], 0.01)[0]:
      chunk = os.read(0, 1 << 16).decode()
      open_input = bool(chunk)
      pending += chunk
      *lines, pending = pending.split("\n")
      for line in lines:
        r = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
          _child(r["argv"], r["cwd"], r["out"], r["err"], r["env"])
        running[pid] = r["id"]
        print(json.dumps({"id": r["id"], "pid": pid}), flush=True)
    elif not open_input:
      time.sleep(0.01)
    while running:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if not pid:
        break
      print(json.dumps({"id": running.pop(pid), "status": os.waitstatus_to_exitcode(status)}),
            flush=True)


if __name__ == "__main__":
  _serve()
