"""Finished runs read back from their workdirs: labels, metric order, first-vs-last summaries,
config differences and wall time. Everything the PNG, Markdown and HTML reports show."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import numpy as np

from collapse_jax import workdir as workdir_lib
from collapse_jax.report import plots

# What a reader judges first (held-out real-data loss, then sample quality), in this order;
# training-set bookkeeping last. Metrics named nowhere here go between the two. A family
# names its held-out loss for what it is: a cross-entropy or ELBO (test_loss), a negative
# log-likelihood (test_nll: KDE, Gaussian MLE), a parameter error (test_error: OLS).
HEADLINE = ("test_loss", "test_nll", "test_error", "fd_classifier", "fid", "precision", "recall",
            "inception_precision", "inception_recall")
BOOKKEEPING = ("train_examples", "train_frac_synthetic")

DESCRIPTIONS = {
    "test_loss": "test loss on held-out real data (lower is better)",
    "test_nll": "negative log-likelihood of held-out real data (lower is better)",
    "test_error": "squared error of the fitted parameters, ||w - w*||^2 (lower is better)",
    "fd_classifier": "Frechet distance to real images in classifier features (lower is better)",
    "fid": "FID to real images in Inception features (lower is better)",
    "precision": "precision: share of samples close to real data (higher is better)",
    "recall": "recall: share of real data the samples cover (higher is better)",
    "inception_precision": "precision in Inception features (higher is better)",
    "inception_recall": "recall in Inception features (higher is better)",
    "train_examples": "training-set size (bookkeeping)",
    "train_frac_synthetic": "synthetic fraction of the training set (bookkeeping)",
}

# +1: higher is better, -1: lower is better (colours the change column; others uncoloured).
BETTER = {"test_loss": -1, "test_nll": -1, "test_error": -1, "fd_classifier": -1, "fid": -1,
          "precision": 1, "recall": 1, "inception_precision": 1, "inception_recall": 1}

TIMING_FILE = "timing.json"  # {"wall_s": seconds}, written by whoever ran the run


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  """One finished run. ``rows``: metrics.jsonl; ``config``: config.json as a dict."""
  workdir: pathlib.Path
  label: str
  config: dict
  rows: list[dict]

  @property
  def num_seeds(self) -> int:
    return len({r["seed"] for r in self.rows})

  @property
  def generations(self) -> list[int]:
    return sorted({r["generation"] for r in self.rows})


def generation_files(workdir: pathlib.Path, folder: str, suffix: str
                     ) -> dict[int, pathlib.Path]:
  """``{generation: path}`` of ``<workdir>/<folder>/generation_XXX.<suffix>``, sorted."""
  found = {}
  for p in (pathlib.Path(workdir) / folder).glob(f"generation_*.{suffix}"):
    m = re.fullmatch(rf"generation_(\d+)\.{suffix}", p.name)
    if m:
      found[int(m.group(1))] = p
  return dict(sorted(found.items()))


def choose_generations(available, columns: int) -> list[int]:
  """At most ``columns`` of the ``available`` generations, evenly spaced, first and last
  always included."""
  gens = sorted(available)
  if len(gens) <= columns:
    return gens
  return [gens[i] for i in np.unique(np.linspace(0, len(gens) - 1, columns).round().astype(int))]


def policy_label(policy: dict) -> str:
  """The policy and its parameter, once: ``replace``, ``mix (lambda=0.5)``."""
  if policy["name"] == "mix":
    return f"mix (lambda={policy['mix_lambda']:g})"
  return policy["name"]


def load_runs(workdirs: list[pathlib.Path]) -> list[Run]:
  """The runs in ``workdirs``, labelled by policy; a workdir's name is added only where two
  runs would otherwise share a label."""
  missing = [str(w) for w in workdirs if not (w / "metrics.jsonl").exists()]
  if missing:
    raise FileNotFoundError(f"No finished run (metrics.jsonl) in {', '.join(missing)}.")
  configs = [workdir_lib.read_config(w) or {} for w in workdirs]
  unknown = [str(w) for w, c in zip(workdirs, configs) if not c]
  if unknown:
    raise FileNotFoundError(f"No run's config.json in {', '.join(unknown)}.")
  labels = [policy_label(c["policy"]) for c in configs]
  runs = []
  for w, c, label in zip(workdirs, configs, labels):
    if labels.count(label) > 1:
      label = f"{label} [{w.parent.name}/{w.name}]"
    rows = read_rows(w / "metrics.jsonl")
    runs.append(Run(workdir=w, label=label, config=c, rows=rows))
  return runs


def read_rows(path: pathlib.Path) -> list[dict]:
  """The rows of a metrics.jsonl; an empty or damaged file is one sentence
  (FileNotFoundError, which the launchers report with exit 2)."""
  rows = []
  for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      raise FileNotFoundError(
          f"{path} is damaged at line {i} (not a JSON row); rerun the run's training "
          "command to rewrite it from its checkpoints.") from None
  if not rows:
    raise FileNotFoundError(f"{path} is empty: the run has no finished generation yet.")
  return rows


def ordered_metrics(runs: list[Run]) -> list[str]:
  """Metrics every run has: headline first, bookkeeping last."""
  common = set.intersection(*(set(plots.metric_names(r.rows)) for r in runs))
  rank = lambda m: ((0, HEADLINE.index(m)) if m in HEADLINE else
                    (2, BOOKKEEPING.index(m)) if m in BOOKKEEPING else (1, m))
  return sorted(common, key=rank)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
  """A metric at a run's first and last generation: mean and std over seeds."""
  first_generation: int
  last_generation: int
  first: tuple[float, float]
  last: tuple[float, float]

  @property
  def percent(self) -> float:
    """Change of the mean in percent of the first mean (nan when that is 0)."""
    base = self.first[0]
    return float("nan") if base == 0 else 100.0 * (self.last[0] - base) / abs(base)


def change(run: Run, metric: str) -> Change:
  gens, values = plots.by_generation(run.rows, metric)
  stat = lambda v: (float(np.mean(v)), float(np.std(v)))
  return Change(first_generation=int(gens[0]), last_generation=int(gens[-1]),
                first=stat(values[0]), last=stat(values[-1]))


def changes(runs: list[Run], metrics: list[str]):
  """Per metric, then run: ``(metric, run, Change, first cell, last cell)``, a cell being
  ``"g=<generation>: mean ± std"`` (the tables of compare.py and html.py)."""
  for metric in metrics:
    for run in runs:
      c = change(run, metric)
      cell = lambda g, v: f"g={g}: {format_value(*v, run.num_seeds)}"
      yield metric, run, c, cell(c.first_generation, c.first), cell(c.last_generation, c.last)


def training_budget(run: Run) -> str:
  """How much each generation trained: a fixed number of optimizer steps (compute matched
  across policies) or epochs of its pool (the papers': compute grows with the pool), or a
  closed-form fit."""
  model = run.config.get("model", {})
  steps, epochs, initial = (model.get(k) or 0 for k in ("steps", "epochs", "initial_steps"))
  if not steps and not epochs:
    return "closed form"
  per = f"{steps} steps" if steps else f"{epochs:g} epochs of its pool"
  return f"{per} per generation" + (f" ({initial} steps at generation 0)" if initial else "")


def format_value(mean: float, std: float, seeds: int) -> str:
  return f"{mean:.4g}" if seeds == 1 else f"{mean:.4g} ± {std:.2g}"


def format_percent(p: float) -> str:
  return "n/a" if not np.isfinite(p) else f"{p:+.0f}%" if abs(p) >= 10 else f"{p:+.1f}%"


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out |= _flatten(v, f"{prefix}{k}.")
    else:
      out[prefix + k] = v
  return out


def config_differences(runs: list[Run]) -> dict[str, list[object]]:
  """Dotted config keys whose values differ between the runs: key -> value per run (None
  where a run lacks the key)."""
  flat = [_flatten(r.config) for r in runs]
  keys = sorted(set().union(*flat))
  return {k: [f.get(k) for f in flat] for k in keys
          if any(f.get(k) != flat[0].get(k) for f in flat[1:])}


def wall_time(workdir: pathlib.Path) -> tuple[float | None, str]:
  """(seconds, how it was measured) of a run's last invocation.

  ``timing.json`` when the run's launcher wrote one; otherwise config.json (written when the
  run starts, after validation) to metrics.jsonl (rewritten after every chunk), which misses
  start-up and the final plots.
  """
  timing = workdir / TIMING_FILE
  if timing.exists():
    return float(json.loads(timing.read_text())["wall_s"]), "timed"
  start, end = workdir / "config.json", workdir / "metrics.jsonl"
  if start.exists() and end.exists():
    return max(0.0, end.stat().st_mtime - start.stat().st_mtime), "from file times"
  return None, "unknown"


def format_seconds(s: float) -> str:
  return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:02.0f} s"
