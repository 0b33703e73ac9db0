"""Finding pluggable modules by name: model families, data sources, evaluators.

A plug-in is a module ``collapse_jax/<package>/<name>.py`` exposing ``build``; the config
names it (``config.model.name``, ``config.data.source``, ``config.evals.<x>.type``). Modules
without ``build`` in the same package (shared helpers) are not plug-ins. A name with a dot is
a module path outside the package (``my_lab.families.flow``), so a user's own family, source
or evaluator needs no edit inside collapse_jax.
"""
from __future__ import annotations

import importlib
import pkgutil
import types

from collapse_jax.errors import UserError


def names(package: str) -> list[str]:
  """Plug-in names in ``collapse_jax.<package>``, sorted."""
  pkg = importlib.import_module(f"collapse_jax.{package}")
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                if hasattr(importlib.import_module(f"collapse_jax.{package}.{m.name}"), "build"))


def lookup(package: str, name: str, what: str) -> types.ModuleType:
  """The plug-in module ``name``; a `UserError` (a ValueError) in one sentence when there is
  none, so every launcher answers it with exit 2.

  ``what`` names the kind for the message ("model", "data source", "evaluator").
  """
  if "." in name:
    try:
      module = importlib.import_module(name)
    except ImportError as e:
      raise UserError(f"Cannot import the {what} module {name!r} ({e}).") from None
    if not hasattr(module, "build"):
      raise UserError(f"The {what} module {name!r} has no build function.")
    return module
  known = names(package)
  if name not in known:
    raise UserError(f"Unknown {what} {name!r}; choose one of {', '.join(known)}.")
  return importlib.import_module(f"collapse_jax.{package}.{name}")
