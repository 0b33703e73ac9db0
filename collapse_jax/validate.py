"""One validation pass over a config, before any compute or any write to the workdir.

Numbers are checked against declared ranges (`Range`, `fields_problem`): the fields every run
has here (`RANGES`), a family's, source's or evaluator's own in its ``check_config``, with
the same one-sentence refusal naming the field and what it may be. A value that is legal
but surprising (a batch larger than the rows it is drawn from) is a one-line warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import traceback

from absl import logging

from collapse_jax.data import source as source_lib
from collapse_jax.errors import UserError
from collapse_jax.evals import base as evals_base
from collapse_jax.loop import policies
from collapse_jax.models import base as model_base
from collapse_jax.parallel import mesh as mesh_lib


class ConfigError(UserError):
  """A config that cannot run; the message is one sentence for the user."""


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric config field may take: from ``low`` to ``high``, each end
  included unless ``*_open``; whole numbers only if ``integer``. NaN never fits, and an
  infinity only where ``inf`` says what it means. ``note``: what special values mean."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  inf: str = ""
  note: str = ""

  def holds(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return False
    if self.integer and not isinstance(value, numbers.Integral):
      return False
    if not isinstance(value, numbers.Integral):  # ints are exact: never NaN, no float rounding
      value = float(value)
      if math.isnan(value) or (math.isinf(value) and not self.inf):
        return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def __str__(self) -> str:
    show = lambda x: f"{x:g}" if isinstance(x, float) else str(x)
    if self.high == math.inf and self.low == -math.inf:
      bound = ""
    elif self.high == math.inf:
      # "at least 1" for counts; ">= 0", "> 0" otherwise.
      bound = (f"> {show(self.low)}" if self.low_open else
               f"at least {self.low}" if self.integer and self.low >= 1 else
               f">= {show(self.low)}")
    elif self.low == -math.inf:
      bound = f"< {show(self.high)}" if self.high_open else f"<= {show(self.high)}"
    else:
      bound = (f"in {'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}"
               f"{')' if self.high_open else ']'}")
    # Between two finite ends, "finite" goes without saying.
    bounded = math.isfinite(self.low) and math.isfinite(self.high)
    kind = ("an integer" if self.integer else "a number" if self.inf else
            "" if bounded else "a finite number")
    notes = "; ".join(n for n in (kind, self.inf and f"inf: {self.inf}", self.note) if n)
    if not bound:
      return notes
    return f"{bound} ({notes})" if notes else bound


COUNT = Range(1, integer=True)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
# JAX makes a key from a seed as an int32 (rng.seed_keys: a larger seed overflows); replicate
# s uses seed + s, which wraps to the same keys as the unsigned seed would give.
SEED = Range(0, 2**31 - 1, integer=True)

# The fields every run has; a family, source or evaluator checks its own.
RANGES = {
    "seed": SEED,
    "num_seeds": COUNT,
    "num_generations": COUNT,
    "generations_per_chunk": Range(0, integer=True, note="0: one chunk"),
    "checkpoint_every_steps": Range(-1, integer=True, note="0: never, -1: by model size"),
    "log_every_steps": COUNT,
    "sample_chunk_rows": Range(0, integer=True, note="0: never chunk"),
    "n_real": COUNT,
    "n_synth": COUNT,
    "policy.mix_lambda": Range(0, inf="fully synthetic"),
}


def fields_problem(node, ranges: dict[str, Range], prefix: str = "") -> str | None:
  """One sentence on the first field of ``node`` outside its range in ``ranges`` (keys are
  dotted paths; absent and None fields are skipped, a sequence is checked entry by entry),
  naming it ``prefix + key``; None when all fit."""
  for path, allowed in ranges.items():
    value = node
    for part in path.split("."):
      value = value.get(part) if hasattr(value, "get") else None
    if value is None:
      continue
    sequence = isinstance(value, (list, tuple))
    if not all(allowed.holds(v) for v in (value if sequence else (value,))):
      what = f"{prefix}{path}{' entries' if sequence else ''}"
      return f"{what} must be {allowed}, got {value!r}."
  return None


def check(config) -> None:
  """Raises `ConfigError` with the first problem found in ``config``; logs a warning line
  for each legal but surprising value of a config that passes."""
  with fields_read():
    problem = _first_problem(config)
  if problem:
    raise ConfigError(problem)
  _warn_surprises(config)


@contextlib.contextmanager
def fields_read():
  """Turns a config field that a family, source or evaluator reads but the config lacks
  (ml_collections' KeyError) into `ConfigError` naming the field and the module that reads
  it: no field has a hidden default, so a config states each one."""
  try:
    yield
  except (KeyError, AttributeError) as e:
    missing = e.args[0] if isinstance(e, AttributeError) and e.args else e
    frames = traceback.extract_tb(e.__traceback__)
    if not (isinstance(missing, KeyError) and "ml_collections" in frames[-1].filename):
      raise
    reader = next((f.filename for f in reversed(frames) if "collapse_jax" in f.filename),
                  "the run")
    reader = reader[reader.rfind("collapse_jax"):]
    key = str(missing.args[0]).splitlines()[0].strip("'\"")  # "'top_k'\nDid you mean ..."
    raise ConfigError(f"The config has no field {key!r}, "
                      f"which {reader} reads; state it in the config file (every field a "
                      "run uses is stated there).") from None


def _first_problem(config) -> str | None:
  problem = fields_problem(config, RANGES)
  if problem:
    return problem
  try:
    policy_of(config)
  except ValueError as e:  # an unknown name, or a plug-in that cannot be imported
    return str(e)
  if config.train_from not in ("scratch", "previous"):
    return f"train_from must be 'scratch' or 'previous', got {config.train_from!r}."
  problem = mesh_lib.check(config.mesh.data, config.mesh.fsdp)
  if problem:
    return problem
  devices = mesh_lib.from_config(config.mesh).size
  if config.sample_chunk_rows % devices:
    return (f"sample_chunk_rows must be a multiple of the mesh's {devices} devices (the "
            f"chunks are split over them), got {config.sample_chunk_rows}.")
  try:
    model = model_base.family(config.model.name)
    data = source_lib.source_module(config.data.source)
  except ValueError as e:
    return str(e)
  problem = getattr(data, "check_config", lambda c: None)(config)
  if problem:
    return problem
  try:  # loads a dataset: a bad path or file is a config problem too
    source = data.build(config.data)
    num_train, spec = source.num_train, source.row_spec
  except ValueError as e:
    return str(e)
  problem = (getattr(model, "check_config", lambda c, s: None)(config, spec)
             or evals_base.check_config(config, spec))
  if problem:
    return problem
  # (Imported here: curation and the loop read this module's ranges.)
  from collapse_jax.loop import curation, generation  # pylint: disable=g-import-not-at-top
  policy = policy_of(config)
  layout = policy.layout(config.num_generations)
  problem = curation.check_config(config, lambda: generation.Loop(
      model=model.build(config, layout, spec), source=source, policy=policy, layout=layout,
      train_from=config.train_from))
  if problem:
    return problem
  if num_train is not None:
    needed = policy.n_real + config.num_generations * policy.n_fresh
    if needed > num_train:
      return (f"The policy needs {needed} real training rows but the dataset has "
              f"{num_train}; lower n_real or num_generations.")
  return None


def _warn_surprises(config) -> None:
  batch, rows = config.model.get("batch_size"), _fewest_training_rows(config)
  if batch is not None and batch > rows:
    logging.warning("model.batch_size=%d is larger than the %d rows a generation trains on; "
                    "its minibatches repeat rows (they are drawn with replacement).",
                    batch, rows)
  rate = config.model.get("learning_rate")
  if rate is not None and rate > 1:  # Adam moves every weight by about the rate per step
    logging.warning("model.learning_rate=%g is above 1, where Adam's steps are as large as "
                    "the weights and training diverges; did an exponent lose its minus sign?",
                    rate)


def _fewest_training_rows(config) -> int:
  """The fewest rows any generation trains on: generation 0's real set, or fewer later
  where a generation trains on its newest block alone (replace, fully_synthetic,
  fresh_real: n_fresh + n_synth rows) or on a subsample of n_synth rows."""
  policy = policy_of(config)
  if config.num_generations == 1 or policy.name in ("accumulate", "mix", "real_only",
                                                    "more_real"):
    return policy.n_real  # later views hold n_real rows or more (mix at inf: n_real samples)
  return min(policy.n_real, policy.n_fresh + policy.n_synth)


def policy_of(config) -> policies.Policy:
  return policies.make_policy(config.policy.name, n_real=config.n_real,
                              n_synth=config.n_synth, mix_lambda=float(config.policy.mix_lambda))
