"""Sweeps: one config over the product of value lists of its fields, each point a normal,
resumable run in ``<dir>/<point>/`` (so main.py, sample.py and report.py work on it), and
``<dir>/sweep.html``: each headline metric against the swept value (Bertrand et al.'s
lambda figure), beside ``report.html``'s curves over generations of every point.

    axes = parse_axes(config, ["policy.mix_lambda=0,0.5,inf"])
    run(config, axes, pathlib.Path("runs/lambda"))

Points that differ only in scalar fields of the model, policy or curation that the compiled
loop can take as inputs (rates, temperatures, bandwidths, thresholds: `INPUT_GROUPS`) run
side by side, as one compiled loop vmapped over points and seeds
(`experiment.train_and_evaluate_side_by_side`). A field that sets a shape, a step count or a
Python branch (batch sizes, widths, epochs, ``policy.mix_lambda``, which sets the synthetic
rows' count) fails to trace, and its points run one after another, as do points whose
workdirs already hold a run (they resume). ``point`` and
``num_points`` run a slice (``i % num_points == point``), so each slice can be a job of an
existing scheduler; the report draws the points that are done and lists the others.
"""
from __future__ import annotations

import atexit
import dataclasses
import difflib
import itertools
import math
import pathlib
import shutil
import tempfile
from typing import Any

import ml_collections
from absl import logging

from collapse_jax import cli
from collapse_jax.errors import UserError

MAX_POINTS = 64  # above this, a sweep needs allow_large: one typo can mean hours of runs
INPUT_GROUPS = ("model.", "policy.", "curation.")  # where a traced scalar input may live


@dataclasses.dataclass(frozen=True)
class Axis:
  field: str          # a dotted path in the config, e.g. "policy.mix_lambda"
  values: tuple       # parsed to the field's type


def _field(config, path: str):
  node = config
  for i, key in enumerate(path.split(".")):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = ".".join(["config"] + path.split(".")[:i])
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(key, keys, n=1)
      raise UserError(f"--sweep={path}=...: {where} has no field {key!r}"
                      + (f"; did you mean {'.'.join(path.split('.')[:i] + close)}?"
                         if close else "."))
    node = node[key]
  return node


def parse_axes(config, specs: list[str], allow_large: bool = False) -> list[Axis]:
  """``["field=v1,v2", ...]`` as axes of ``config``; each mistake one sentence (UserError)."""
  if not specs:
    raise UserError("A sweep needs at least one --sweep=field=value1,value2,....")
  axes = []
  for spec in specs:
    path, has_values, text = spec.partition("=")
    words = [w.strip() for w in text.split(",")] if text.strip() else []
    if not has_values or not words or not all(words):
      raise UserError(f"--sweep={spec}: give a field and a comma-separated list of values, "
                      "e.g. --sweep=policy.mix_lambda=0,0.5,1.")
    current = _field(config, path)
    if isinstance(current, ml_collections.ConfigDict):
      raise UserError(f"--sweep={spec}: config.{path} is a group of fields; sweep one of them.")
    try:
      values = tuple(cli.parse_value(type(current), w) for w in words)
    except ValueError as e:
      raise UserError(f"--sweep={spec}: config.{path} takes {type(current).__name__} "
                      f"values; {e}") from None
    if len(set(values)) < len(values):
      raise UserError(f"--sweep={spec}: a value is given twice.")
    if path in [a.field for a in axes]:
      raise UserError(f"--sweep names config.{path} twice; give all its values in one.")
    axes.append(Axis(path, values))
  total = math.prod(len(a.values) for a in axes)
  if total > MAX_POINTS and not allow_large:
    raise UserError(f"The sweep has {total} points, above {MAX_POINTS}; pass --allow_large "
                    "if that is meant.")
  return axes


def points(config, axes: list[Axis]) -> list[tuple[str, Any, dict]]:
  """``(name, config, {field: value})`` per point, in product order; ``name`` is the
  point's folder: ``field=value[,field=value...]``."""
  out = []
  for values in itertools.product(*(a.values for a in axes)):
    point = config.copy_and_resolve_references()
    setting = dict(zip((a.field for a in axes), values))
    for path, value in setting.items():
      put(point, path, value)
    out.append((",".join(f"{k}={v}" for k, v in setting.items()), point, setting))
  return out


def run(config, axes: list[Axis], out_dir: pathlib.Path, *, overwrite: bool = False,
        point: int = 0, num_points: int = 1, point_figures: bool = False) -> pathlib.Path:
  """Runs the points of slice ``point`` of ``num_points`` in ``out_dir/<point>`` (each
  checked before the first starts), then writes the sweep's report; returns sweep.html.
  ``point_figures``: each point also draws its own run's figures (the report draws every
  point's curves either way)."""
  from collapse_jax import progress, validate  # lazy: the driver imports the report
  if not 0 <= point < num_points:
    raise UserError(f"--point must be in [0, {num_points}), got {point}.")
  every = points(config, axes)
  todo = [p for i, p in enumerate(every) if i % num_points == point]
  for _, point_config, _ in todo:
    validate.check(point_config)
  _share_compiled_programs()
  with progress.figures(point_figures and progress.figures_wanted()):
    _run_points(todo, tuple(a.field for a in axes if _may_be_input(a)), out_dir, overwrite)
  from collapse_jax.report import sweep as sweep_report
  return sweep_report.write(out_dir, axes, every)


def _share_compiled_programs() -> None:
  """Points rebuild their programs (evaluators, and the loop of each point run alone), most
  of them the same program as another point's; JAX's compilation cache in a folder of
  this process (unless the user set one) compiles each once. Not shared beyond the process:
  an executable is compiled for this machine's CPU."""
  import jax
  if jax.config.jax_compilation_cache_dir:
    return
  folder = tempfile.mkdtemp(prefix="collapse_jax_sweep_cache_")
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _run_points(todo: list, inputs: tuple[str, ...], out_dir: pathlib.Path,
                overwrite: bool) -> None:
  """Runs ``todo``'s points: side by side where they differ only in ``inputs``, else one
  after another."""
  from collapse_jax import experiment
  for group in _groups(todo, inputs):
    names = ", ".join(name for name, _, _ in group)
    if len(group) > 1:
      try:
        experiment.train_and_evaluate_side_by_side(
            [c for _, c, _ in group], [out_dir / n for n, _, _ in group], inputs,
            overwrite=overwrite)
        continue
      except experiment.NotSideBySide as e:
        logging.info("sweep points %s run one after another: %s.", names, e)
    for name, point_config, _ in group:
      logging.info("sweep point %s", name)
      experiment.train_and_evaluate(point_config, out_dir / name, overwrite=overwrite)


def _may_be_input(axis: Axis) -> bool:
  """Whether ``axis`` may be a traced scalar of the compiled loop: a field of the model,
  policy or curation whose values are all numbers (tracing decides the rest)."""
  if not axis.field.startswith(INPUT_GROUPS):
    return False
  try:
    [number(v) for v in axis.values]
  except (TypeError, ValueError):
    return False
  return True


def _groups(todo: list, inputs: tuple[str, ...]) -> list[list]:
  """``todo``'s points grouped by their values of the other axes, in order."""
  groups: dict = {}
  for name, point_config, setting in todo:
    key = tuple((k, v) for k, v in setting.items() if k not in inputs)
    groups.setdefault(key, []).append((name, point_config, setting))
  return list(groups.values())


def number(value) -> float | int:
  """A swept value as the number a traced input takes: ints and floats as they are, a string
  that spells a number (``model.bandwidth``'s "0.2") parsed; anything else raises."""
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    raise TypeError(f"{value!r} is not a number")
  return float(value) if isinstance(value, str) else value


def flat(config) -> dict[str, Any]:
  """``config``'s leaves by dotted path."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out |= {f"{key}.{k}": v for k, v in flat(value).items()}
    else:
      out[key] = value
  return out


def put(config, path: str, value) -> None:
  """Sets the field at dotted ``path`` of ``config``."""
  *parents, key = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[key] = value
