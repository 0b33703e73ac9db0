"""The one parser of config variants: ``--config=configs/x.py:<arg>`` (big_vision's
``parse_arg``), and the translation of the old per-policy config names.

``arg`` is comma-separated tokens. A bare word is a policy name or a size switch (``smoke``,
``cpu``); everything else is ``key=value``: a config's own choice (``process=edm``,
``preset=llama2-12m``) or number (``lambda=0.5``, ``temperature=0.7``). Anything else is
refused in one sentence: a misspelt ``:smok`` must not silently run the full experiment,
and a word such as ``edm`` is refused with its ``key=`` spelling rather than guessed.
"""
from __future__ import annotations

import importlib.util
import math
import pathlib

from collapse_jax.errors import UserError


class VariantError(UserError):
  """An unknown, ambiguous or conflicting config variant; the message is one sentence."""


def parse(arg: str | None, *, flags: tuple[str, ...] = ("smoke",),
          policies: tuple[str, ...] = (),
          choices: dict[str, tuple[str, ...]] | None = None,
          numbers: dict[str, str] | None = None) -> dict:
  """``{flag: bool, "policy": name or None, choice: value or None, number: float or None}``.

  ``choices``: key -> allowed values; ``numbers``: key -> the name it is returned under
  (``{"lambda": "mix_lambda"}``). E.g. ``parse("replace,smoke", policies=POLICIES)`` gives
  ``{"smoke": True, "policy": "replace"}``.
  """
  choices, numbers = choices or {}, numbers or {}
  out: dict = ({f: False for f in flags} | {"policy": None} | {c: None for c in choices}
               | {n: None for n in numbers.values()})
  keys = sorted(choices) + sorted(numbers) + (["policy"] if policies else [])
  for token in (t.strip() for t in (arg or "").split(",")):
    if not token:
      continue
    key, has_value, value = token.partition("=")
    if not has_value:
      if token in flags:
        out[token] = True
        continue
      if token in policies:
        key, value = "policy", token
      else:
        raise VariantError(_bare_word_problem(token, flags, policies, choices, numbers))
    if key == "policy" and policies:
      if value not in policies:
        raise VariantError(f"Unknown policy {value!r} in the config variants; choose one of "
                           f"{', '.join(policies)}.")
      name = "policy"
    elif key in choices:
      if value not in choices[key]:
        raise VariantError(f"Config variant {key}={value} is not one of "
                           f"{', '.join(choices[key])}.")
      name = key
    elif key in numbers:
      try:
        value = float(value)
      except ValueError:
        raise VariantError(f"Config variant {key}={value} needs a number.") from None
      if math.isnan(value):
        raise VariantError(f"Config variant {key}={value} needs a number, not nan.")
      name = numbers[key]
    else:
      raise VariantError(f"Unknown config variant key {key!r}; this config takes "
                         f"{', '.join(f'{k}=' for k in keys) or 'no keys'}"
                         f"{' and ' + ', '.join(flags) if flags else ''}.")
    if out[name] is not None:
      raise VariantError(f"Config variant {key} given twice ({out[name]!r} and {value!r}).")
    out[name] = value
  return out


def _bare_word_problem(token, flags, policies, choices, numbers) -> str:
  owners = [k for k, values in choices.items() if token in values]
  if owners:
    return f"Config variant {token!r} needs its key: write {owners[0]}={token}."
  try:
    float(token)
    if numbers:
      return (f"A bare number ({token}) in the config variants is ambiguous; write "
              f"{next(iter(numbers))}={token}.")
  except ValueError:
    pass
  known = list(flags) + list(policies) + [f"{k}=..." for k in list(choices) + list(numbers)]
  return f"Unknown config variant {token!r}; known variants: {', '.join(known)}."


def load_config(path: str | pathlib.Path, *args: str | None):
  """``get_config(arg)`` of the config file ``path``, ``arg`` the comma-joined non-empty
  ``args`` (None if none), as ml_collections' config flag calls it: the one loader of
  config files (the CLI, configs built on others, the tests)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(",".join(a for a in args if a) or None)


def renamed_config(spec: str) -> str | None:
  """The current spelling of an old per-policy config name, or None when ``spec``'s file
  exists or is no such name: ``configs/linreg_replace.py:smoke`` ->
  ``configs/linreg.py:replace,smoke``; ``configs/cifar10_edm_mix.py`` ->
  ``configs/cifar10.py:process=edm,mix``."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if file.exists() or file.suffix != ".py":
    return None
  for cut in (i for i, c in enumerate(file.stem) if c == "_"):
    experiment, rest = file.stem[:cut], file.stem[cut + 1:]
    if rest in _OLD_POLICIES:
      words = [rest]
    elif rest in _OLD_PROCESSES:
      words = [f"process={rest.partition('_')[0]}", "mix"]
    else:
      continue
    if file.with_name(experiment + ".py").is_file():
      return f"{file.with_name(experiment + '.py')}:{','.join(words + ([arg] if arg else []))}"
  return None


# The words old config names ended with: a policy (loop.policies.NAMES, which this module,
# imported by the CLI before JAX starts, does not import), or CIFAR-10's process and policy.
_OLD_POLICIES = ("replace", "accumulate", "accumulate_subsample", "mix", "fully_synthetic",
                 "fresh_real")
_OLD_PROCESSES = ("ddpm_mix", "edm_mix", "otcfm_mix")
