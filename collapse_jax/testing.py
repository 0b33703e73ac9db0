"""Checks that a family (a plug-in's or the package's) keeps the rules the loop's guarantees
rest on (`models.base.GenerativeModel`), for authors of new families:

    from collapse_jax import testing
    testing.check_family(config)  # a small config of the family: seconds per run

Each rule is checked by runs of ``config`` in temporary workdirs; a broken one raises
AssertionError naming it.
"""
from __future__ import annotations

import copy
import tempfile

from collapse_jax import experiment


def _run(config, workdir, **fields) -> list[dict]:
  config = copy.deepcopy(config)
  config.update(fields)
  return experiment.train_and_evaluate(config, workdir)


def _generation(rows: list[dict], g: int) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.startswith("theory_")}
          for r in rows if r["generation"] == g]


def check_family(config) -> None:
  """Asserts, for ``config``'s family (at least 2 generations):
  1. reruns give the same numbers, bitwise;
  2. generation 0 does not depend on the policy: replace and accumulate train it on the
     same real rows in pools of different capacity, so a family that reads the pool other
     than through its `TrainView` (``view.reduce``, ``view.gather``, its counts) differs;
  3. a run continued from 1 generation to G equals a straight G-generation run.
  """
  assert config.num_generations >= 2, "check_family needs a config of 2 or more generations."
  with tempfile.TemporaryDirectory() as tmp:
    policy = dict(config.policy)
    straight = _run(config, f"{tmp}/a")
    assert _run(config, f"{tmp}/b") == straight, (
        "Rule 1 broken: two runs of one config and seed differ; fit, sample or evaluate "
        "draws randomness from somewhere other than its key.")
    by_policy = [_generation(_run(config, f"{tmp}/{name}", policy=dict(policy, name=name)), 0)
                 for name in ("replace", "accumulate")]
    assert by_policy[0] == by_policy[1], (
        "Rule 2 broken: generation 0 differs under replace and accumulate; the family reads "
        "the pool beyond its view (e.g. over pool.layout.capacity rows) instead of through "
        "view.reduce / view.gather and the view's counts.")
    _run(config, f"{tmp}/c", num_generations=1)
    assert _run(config, f"{tmp}/c") == straight, (
        "Rule 3 broken: a run continued from generation 1 differs from a straight run; the "
        "state returned by fit must hold everything the next generation needs.")
