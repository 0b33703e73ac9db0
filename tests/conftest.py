"""Shared test helpers: the real configs, shrunk, run in temporary workdirs."""
import importlib.util
import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# The real MNIST for the MNIST configs: ../shared/data/mnist beside the checkout (here and
# on CI). The project never requires it; without it those configs are refused cleanly.
_SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

# Tests check results, not speed: XLA:CPU's lower optimisation level halves compile
# times, which dominate this suite. Set before JAX starts its backend.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=1").strip()
if _SHARED_MNIST.exists():
  os.environ.setdefault("COLLAPSE_JAX_MNIST", str(_SHARED_MNIST))


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
  from collapse_jax import rng
  rng.configure_jax()
  cache = ROOT / ".pytest_cache" / "jax"
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Files whose tests take a minute or more each on 2 cores (subprocess runs). They start
# first: under `-n 2` a long test dealt out last keeps one worker busy while the other idles.
SLOW_FILES = ("test_fsdp.py", "test_multihost.py", "test_segments.py", "test_cli.py")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.path.name not in SLOW_FILES)  # stable: order kept within
