"""The one parser of config variants: ``--config=configs/x.py:<arg>`` (big_vision's
``parse_arg``).

``arg`` is comma-separated tokens, each a flag (``smoke``, ``cpu``), a value of one of the
config's choices (a policy name, a diffusion kind, a model preset), or a number (a mix
lambda, where the config takes one). Anything else is refused: a misspelt ``:smok`` must not
silently run the full experiment.
"""
from __future__ import annotations

from collapse_jax.errors import UserError


class VariantError(UserError):
  """An unknown or conflicting config variant; the message is one sentence."""


def parse(arg: str | None, *, flags: tuple[str, ...] = ("smoke",),
          choices: dict[str, tuple[str, ...]] | None = None,
          number: str | None = None) -> dict:
  """``{flag: bool, choice: token or None, number: float or None}`` from ``arg``.

  E.g. ``parse("replace,smoke", choices={"policy": POLICIES})`` gives
  ``{"smoke": True, "policy": "replace"}``.
  """
  choices = choices or {}
  out: dict = {f: False for f in flags} | {c: None for c in choices}
  if number:
    out[number] = None
  for token in (t.strip() for t in (arg or "").split(",")):
    if not token:
      continue
    if token in flags:
      out[token] = True
      continue
    kinds = [c for c, values in choices.items() if token in values]
    if kinds:
      if out[kinds[0]] is not None:
        raise VariantError(f"Config variant {kinds[0]} given twice ({out[kinds[0]]!r} and "
                           f"{token!r}).")
      out[kinds[0]] = token
      continue
    if number:
      try:
        out[number] = float(token)
        continue
      except ValueError:
        pass
    known = list(flags) + [v for values in choices.values() for v in values]
    known += [f"a number ({number})"] if number else []
    raise VariantError(f"Unknown config variant {token!r}; known variants: "
                       f"{', '.join(known)}.")
  return out
