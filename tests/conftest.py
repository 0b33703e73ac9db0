"""Shared test helpers: the real configs, shrunk, run in temporary workdirs."""
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def load_config(name: str, arg: str | None = "smoke"):
  """``get_config(arg)`` of ``configs/<name>.py``, exactly as launch/main.py loads it."""
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def read_metrics(workdir) -> list[dict]:
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def config_loader():
  return load_config


def pytest_configure(config):
  # Many tests compile the same programs (a config run in several workdirs): reuse them.
  import jax
  cache = ROOT / ".pytest_cache" / "jax"
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
