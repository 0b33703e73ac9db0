"""The launchers' command line: every mistake in it is one sentence and exit 2.

absl answers a bad flag with exit 1 and a page of usage, and a bad config file or override
with a traceback. A launcher (launch/main.py, launch/report.py, launch/compare_policies.py)
instead defines its flags with absl as usual, its config flag with `config_flag`, and runs
with `run` in place of ``absl.app.run``:

    _CONFIG = cli.config_flag()                       # --config=file.py[:variants], --config.x=y
    _WORKDIR = flags.DEFINE_string("workdir", None, "...")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):                                   # argv: the program name only, unless
      ...                                             # run(..., positional=True)

    if __name__ == "__main__":
      cli.run(main)

An old per-policy config name (``configs/linreg_replace.py``) runs as its new spelling
(``configs/linreg.py:replace``) after a one-line note (`variants.renamed_config`), and a
value ``--flag=~/path`` means the home folder, as ``--flag ~/path`` does in the shell. `run`
then refuses, with ``error: <sentence>`` on stderr and exit 2 before ``main`` starts:
an unknown or malformed flag, a missing required flag, a config file that does not exist,
an unknown config variant (`variants.VariantError` from ``get_config``), an override of a
field the config does not have, an override value of the wrong type (``--config.seed=abc``)
and, unless ``positional=True``, positional arguments. Inside ``main`` it maps the
library's user-facing errors the same way (`run_or_exit`: a config the validation pass
refuses, a workdir that may not be used, an unreadable checkpoint, a missing file, an OS
error on a path (read-only, not a folder, disk full), a platform the machine lacks: exit 2;
a run gone non-finite: exit 1; Ctrl-C: one line and exit 130, the run resumable). Any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
import errno
import os
import re
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags
from ml_collections import config_dict, config_flags

from collapse_jax import errors, variants
from collapse_jax import workdir as workdir_lib

_CONFIG_FLAGS: list[str] = []   # names of the flags made by config_flag, for the messages

_NOT_A_CONFIG = "a config file is Python that defines get_config(arg), as configs/*.py do."
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               tuple: "a tuple such as '(1, 2)'"}


def fail(message: str) -> NoReturn:
  """Prints ``error: <message>`` on stderr and exits 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def config_flag(name: str = "config", help_string: str = "Experiment config file[:variants]."
                ) -> flags.FlagHolder:
  """``--<name>=configs/x.py[:variant,...]`` plus ``--<name>.field=value`` overrides; the
  value is a locked ConfigDict (a misspelt override is refused, not added)."""
  _CONFIG_FLAGS.append(name)
  return config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)


def run(main: Callable[[list[str]], None], *, positional: bool = False) -> None:
  """``absl.app.run(main)`` with command-line mistakes answered by `fail`.

  ``positional``: whether ``main`` takes positional arguments (``argv[1:]``); if not,
  any are refused.
  """
  def parse(argv: list[str]) -> list[str]:
    rest = _parse_flags(argv)
    if len(rest) > 1 and not positional:
      fail(f"unexpected argument{'s' * (len(rest) > 2)} {' '.join(rest[1:])}; every option "
           "is a --flag=value (see --helpshort).")
    return rest

  try:
    app.run(lambda argv: run_or_exit(main, argv), flags_parser=parse)
  except KeyboardInterrupt:  # before main started (imports, JAX's start)
    _interrupted()


def run_or_exit(fn, *args, **kwargs):
  """``fn(*args, **kwargs)`` for a launcher: a user's mistake or an OS refusal becomes one
  sentence on stderr and exit 2 (a run that went non-finite: exit 1; Ctrl-C: 130), never a
  traceback."""
  # Late: these import JAX, which a refused command line or --help does not need.
  from collapse_jax import progress
  try:
    return fn(*args, **kwargs)
  except errors.UserError as e:
    fail(str(e))
  except errors.NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except progress.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(0)
  except KeyboardInterrupt:
    _interrupted()
  except OSError as e:  # a workdir or output the OS refuses: read-only, not a folder, full
    fail(os_problem(e) if e.errno else str(e))  # (no errno: the library's own sentence)
  except (RuntimeError, AssertionError):  # how JAX says it cannot start a platform
    problem = _platform_problem()
    if problem is None:
      raise
    fail(problem)


def _interrupted() -> NoReturn:
  print("interrupted; rerun the same command to resume.", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  # Not sys.exit: tearing the interpreter down under XLA's running threads can crash it.
  # Nothing is lost: every checkpoint is written to a temporary name and renamed whole.
  os._exit(130)


def os_problem(error: OSError) -> str:
  """An OS error as one sentence naming the path and the cause."""
  cause = (error.strerror or str(error)).rstrip(".")
  where = error.filename or "a file"
  if error.errno == errno.ENOSPC:
    return f"Cannot write {where}: the disk is full; free space and rerun the same command."
  return f"Cannot use {where}: {cause.lower()}."


def _platform_problem() -> str | None:
  """One sentence when JAX cannot start its platform (``JAX_PLATFORMS`` names one this
  machine lacks), else None."""
  import jax
  try:
    jax.devices()
    return None
  except Exception:  # pylint: disable=broad-except  (any failure to start is the answer)
    asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "its default"
    return (f"JAX cannot start the platform {asked} on this machine; unset JAX_PLATFORMS "
            "to use what the machine has, or install the jax build for that platform.")


def _expand_home(arg: str) -> str:
  """``--flag=~/x`` with ``~`` expanded, as the shell expands ``--flag ~/x`` but not the
  ``=`` form: absl would take it literally, and a workdir ``./~/x`` is neither what the user
  meant nor a folder to clean up safely (``rm -rf ~``)."""
  flag, eq, value = arg.partition("=")
  if arg.startswith("-") and eq and value.startswith("~"):
    return f"{flag}={os.path.expanduser(value)}"
  return arg


def _parse_flags(argv: list[str]) -> list[str]:
  argv = [argv[0], *map(_expand_home, argv[1:])]
  for name in ("workdir", "out"):  # the launchers' output paths
    problem = workdir_lib.url_problem(_flag_argument(argv, name) or "", f"--{name}")
    if problem:
      fail(problem)
  for name in _CONFIG_FLAGS:  # a missing file is otherwise only noticed when first read
    spec = _flag_argument(argv, name)
    renamed = spec and variants.renamed_config(spec)
    if renamed:
      print(f"note: {spec} is an old config name; running {renamed} (the old per-policy "
            "files are gone: use the new spelling).", file=sys.stderr)
      argv = _with_flag_argument(argv, name, renamed)
      spec = renamed
    if spec is None:
      continue
    file = spec.split(":", 1)[0]
    if not os.path.isfile(file):
      fail(f"The config file {file} (from --{name}={spec}) "
           + ("is a folder; name a config file, e.g. configs/linreg.py." if os.path.isdir(file)
              else "does not exist."))
    if not file.endswith(".py"):
      fail(f"--{name}={spec}: {_NOT_A_CONFIG}")
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl's flag errors and config_flags' own, from a config or override
    problem = _explain(e, argv)
    if problem is None:
      raise  # a bug in a config file (a NameError, a syntax error): its traceback helps
    fail(problem)


def _flag_argument(argv: Sequence[str], name: str) -> str | None:
  """The value given to ``--name`` in ``argv`` (the last one), or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    m = re.fullmatch(rf"--?{re.escape(name)}(=(.*))?", arg)
    if m:
      value = m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


def _with_flag_argument(argv: list[str], name: str, value: str) -> list[str]:
  """``argv`` with every value given to ``--name`` replaced by ``value``."""
  out = list(argv)
  for i, arg in enumerate(out[1:], 1):
    if arg == "--":
      break
    m = re.fullmatch(rf"(--?{re.escape(name)})(=.*)?", arg)
    if m and m.group(2) is not None:
      out[i] = f"{m.group(1)}={value}"
    elif m and i + 1 < len(out):
      out[i + 1] = value
  return out


def _chain(error: BaseException) -> list[BaseException]:
  out = []
  while error is not None and error not in out:
    out.append(error)
    error = error.__cause__ or error.__context__
  return out


def _explain(error: BaseException, argv: Sequence[str]) -> str | None:
  """One sentence for a failed ``FLAGS(argv)``, or None when it is not the user's mistake."""
  chain = _chain(error)
  # config_flags re-raises get_config's ValueError/TypeError as the same type with a
  # traceback for message: the original, last in the chain, says what is wrong.
  if any(str(e).startswith("Error whilst parsing config file") for e in chain):
    # (the last: config_flags' re-raise has the same type, a traceback for message)
    refusal = next((e for e in reversed(chain) if isinstance(e, variants.VariantError)), None)
    if refusal is not None:
      return str(refusal)
    original = chain[-1]
    if isinstance(original, (ValueError, TypeError)):  # e.g. variants a config does not take
      spec = next((_flag_argument(argv, n) for n in _CONFIG_FLAGS
                   if _flag_argument(argv, n)), "the config")
      return f"{spec}: {str(original).rstrip('.')}."
  if any(isinstance(e, AttributeError) and "attribute 'get_config'" in str(e) for e in chain):
    spec = next(filter(None, (_flag_argument(argv, n) for n in _CONFIG_FLAGS)), "the config")
    return f"{spec.split(':', 1)[0]} has no get_config: {_NOT_A_CONFIG}"
  for name in _CONFIG_FLAGS:
    problem = _override_problem(argv, name)
    if problem:
      return problem
  if isinstance(error, flags.Error):
    return _flag_error(str(error))
  return None


def _flag_error(message: str) -> str:
  """absl's flag error as a sentence: its first line, without the usage hint."""
  first = message.strip().splitlines()[0].strip() if message.strip() else "bad flag"
  m = re.fullmatch(r"flag --(\w+)=None: Flag --\w+ must have a value other than None\.", first)
  if m:
    return f"--{m.group(1)} is required."
  m = re.match(r"Unknown command line flag '([^']*)'", first)
  if m:
    known = [f for f in flags.FLAGS if "." not in f]
    close = difflib.get_close_matches(m.group(1), known, n=1)
    hint = f"; did you mean --{close[0]}?" if close else " (see --helpshort)."
    return f"Unknown flag --{m.group(1)}{hint}"
  return first.rstrip(".") + "."


def _override_problem(argv: Sequence[str], name: str) -> str | None:
  """What is wrong with the ``--name.field=value`` overrides in ``argv``, checked against
  the config they override (loaded again: this only runs when parsing already failed)."""
  overrides = [a for a in argv[1:] if re.match(rf"--?(no)?{re.escape(name)}\.", a)]
  spec = _flag_argument(argv, name)
  if not overrides or spec is None:
    return None
  try:
    config = variants.load_config(*spec.split(":", 1))
  except Exception:  # pylint: disable=broad-except  (the caller's error explains it)
    return None
  for arg in overrides:
    path, has_value, value = arg.lstrip("-").partition("=")
    path = path.split(".", 1)[1]
    node, walked = config, []
    for key in path.split("."):
      if not isinstance(node, (config_dict.ConfigDict, dict)) or key not in node:
        keys = list(node.keys()) if isinstance(node, (config_dict.ConfigDict, dict)) else []
        where = ".".join([name] + walked)
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"; did you mean {where}.{close[0]}?" if close else (
            f"; it has {', '.join(sorted(keys))}." if keys else f" ({where} is not a group).")
        return f"--{name}.{path}: {where} has no field {key!r}{hint}"
      node, walked = node[key], walked + [key]
    field_type = type(node)
    if not has_value and field_type is not bool:
      return f"--{name}.{path} needs a value: --{name}.{path}=VALUE."
    if isinstance(node, config_dict.ConfigDict):
      return (f"--{name}.{path} is a group of fields; override one of them, e.g. "
              f"--{name}.{path}.{next(iter(node.keys()), 'field')}=VALUE.")
    try:
      if has_value and field_type in _TYPE_WORDS:
        parse_value(field_type, value)
    except ValueError:
      return (f"--{name}.{path}={value}: {name}.{path} takes {_TYPE_WORDS[field_type]}, "
              f"not {value!r}.")
    if node is None:
      return (f"--{name}.{path}: the field is None in this config and has no type to parse "
              f"{value!r} as.")
  return None


def parse_value(field_type: type, text: str):
  """``text`` as a value of a config field of ``field_type`` (absl's parsers, as a
  ``--config.x=`` override takes it; other types: the text); ValueError if it is none."""
  parser = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
            float: flags.FloatParser()}.get(field_type)
  try:
    return parser.parse(text) if parser else text
  except (TypeError, ValueError):
    raise ValueError(f"{text!r} is not {_TYPE_WORDS.get(field_type, field_type.__name__)}."
                     ) from None
