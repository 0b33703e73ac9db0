"""Sweeps: one config over the product of value lists of its fields, each point a normal,
resumable run in ``<dir>/<point>/`` (so main.py, sample.py and report.py work on it), and
``<dir>/sweep.html``: each headline metric against the swept value (Bertrand et al.'s
lambda figure), beside ``report.html``'s curves over generations of every point.

    axes = parse_axes(config, ["policy.mix_lambda=0,0.5,inf"])
    run(config, axes, pathlib.Path("runs/lambda"))

Points run one after another; one with the shapes of an earlier one reuses its compiled
programs (the persistent compilation cache aside, within one process). ``point`` and
``num_points`` run a slice (``i % num_points == point``), so each slice can be a job of an
existing scheduler; the report draws the points that are done and lists the others.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import pathlib
from typing import Any

import ml_collections
from absl import logging

from collapse_jax import cli
from collapse_jax.errors import UserError

MAX_POINTS = 64  # above this, a sweep needs allow_large: one typo can mean hours of runs


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
      *parents, key = path.split(".")
      node = point
      for p in parents:
        node = node[p]
      node[key] = value
    out.append((",".join(f"{k}={v}" for k, v in setting.items()), point, setting))
  return out


def run(config, axes: list[Axis], out_dir: pathlib.Path, *, overwrite: bool = False,
        point: int = 0, num_points: int = 1) -> pathlib.Path:
  """Runs the points of slice ``point`` of ``num_points`` in ``out_dir/<point>`` (each
  checked before the first starts), then writes the sweep's report; returns sweep.html."""
  from collapse_jax import experiment, validate  # lazy: the driver imports the report
  if not 0 <= point < num_points:
    raise UserError(f"--point must be in [0, {num_points}), got {point}.")
  every = points(config, axes)
  todo = [p for i, p in enumerate(every) if i % num_points == point]
  for _, point_config, _ in todo:
    validate.check(point_config)
  for i, (name, point_config, _) in enumerate(todo):
    logging.info("sweep point %s (%d of %d in this slice)", name, i + 1, len(todo))
    experiment.train_and_evaluate(point_config, out_dir / name, overwrite=overwrite)
  from collapse_jax.report import sweep as sweep_report
  return sweep_report.write(out_dir, axes, every)
