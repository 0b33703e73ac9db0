"""Shared test helpers: the real configs, shrunk, run in temporary workdirs."""
import fcntl
import gc
import json
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# The real MNIST for the MNIST configs: $COLLAPSE_JAX_MNIST, else ../shared/data/mnist
# beside the checkout (here and on CI). The project never requires it: elsewhere the tests
# write a stand-in in MNIST's own IDX files (`_mnist_stand_in`), and the golden test skips
# the MNIST numbers, which are the real dataset's.
_SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


_MNIST_STAND_IN = ROOT / ".pytest_cache" / "mnist_stand_in"


def idx(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
  """An IDX file's bytes (MNIST's format): the magic number, each dimension, the data."""
  return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _mnist_stand_in(folder: pathlib.Path) -> pathlib.Path:
  """scikit-learn's 1,797 digits, 8x8 scaled 3x and padded to 28x28 uint8, as MNIST's four
  IDX .gz files in ``folder`` (1,500 training images, 297 test): what the MNIST loader reads
  from the real dataset, at a size the smoke configs need."""
  import gzip
  import numpy as np
  from collapse_jax.data.image_files import _sklearn_digits
  from collapse_jax.workdir import write_atomically
  digits, labels = _sklearn_digits()
  pixels = np.kron(digits, np.ones((3, 3))) * (255 / 16)
  pixels = np.pad(pixels, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
  labels = labels.astype(np.uint8)
  for prefix, rows in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
    for kind, magic, data in (("images", 0x803, pixels[rows]), ("labels", 0x801, labels[rows])):
      payload = gzip.compress(idx(magic, data.shape, data.tobytes()), mtime=0)
      write_atomically(folder / f"{prefix}-{kind}-idx{data.ndim}-ubyte.gz",
                       lambda f, payload=payload: f.write(payload))
  return folder


# Tests check results, not speed, and XLA:CPU compile time is most of this suite. Three
# flags cut it: LLVM's lowest optimisation level (a fifth of the suite's CPU time against
# level 1); XLA's older elemental fusion emitters instead of the MLIR ones (a third to two
# thirds of a smoke program's compile); one LLVM module per program instead of modules
# split for parallel codegen (two cores have none to spare). With the last two together
# most smoke runs come out bitwise as under XLA's default emitters (the emitters alone
# moved some in the last bits); the rest move within the measured drift
# (tests/golden_drift.json, "baseline"). Set before JAX starts its backend; subprocesses
# inherit them, and a flag the caller set wins.
_SUITE_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                    "--xla_cpu_parallel_codegen_split_count=1")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")]
    + [f for f in _SUITE_XLA_FLAGS if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
).strip()
# Runs skip their figures (collapse_jax.progress.figures_wanted): matplotlib's rendering
# costs more than many a smoke run's compute. Tests of figures turn them back on.
os.environ["COLLAPSE_JAX_PLOTS"] = "0"
if "COLLAPSE_JAX_MNIST" not in os.environ:
  os.environ["COLLAPSE_JAX_MNIST"] = str(
      _SHARED_MNIST if _SHARED_MNIST.exists() else _mnist_stand_in(_MNIST_STAND_IN))
MNIST_IS_STAND_IN = pathlib.Path(os.environ["COLLAPSE_JAX_MNIST"]) == _MNIST_STAND_IN
# Many tests compile the same programs (a config run in several workdirs, in this process or
# in a launcher's): one persistent compilation cache for all of them, subprocesses included
# (they read these variables when they import JAX). Every program is cached, however quick
# its compile: a launcher process otherwise recompiles each small one (4-11% of the
# launcher-heavy test files' CPU time in paired runs).
JAX_CACHE = ROOT / ".pytest_cache" / "jax"
os.environ["JAX_COMPILATION_CACHE_DIR"] = str(JAX_CACHE)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# The image evaluator's feature classifiers, shared the same way (a fresh clone starts cold;
# a user's own cache is neither read nor written).
os.environ["COLLAPSE_JAX_CLASSIFIERS"] = str(ROOT / ".pytest_cache" / "classifiers")


def load_config(spec: str, arg: str | None = "smoke"):
  """``configs/<name>.py``'s config for ``spec = "<name>[:variants]"`` with ``arg``'s variants
  added (``load_config("linreg:replace")`` is ``--config=configs/linreg.py:replace,smoke``),
  exactly as launch/main.py loads it."""
  from collapse_jax import variants
  name, _, fixed = spec.partition(":")
  return variants.load_config(CONFIGS / f"{name}.py", fixed, arg)


def read_metrics(workdir) -> list[dict]:
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def config_loader():
  return load_config


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, worker_id):
  """``smoke_run(spec)``: ``(workdir, metric rows)`` of `load_config`'s ``spec`` run to the
  end, once per test session, for every test that needs a finished run of it (the golden
  test included). Under xdist the workers share one folder of runs: the first to ask for a
  spec makes it while another that asks waits for it (a run is bitwise the same in either
  worker: same machine, flags and versions). Shared: read it, or copy the workdir before
  changing anything in it."""
  root = tmp_path_factory.getbasetemp()
  if worker_id != "master":  # the session's folder, above each worker's own
    root = root.parent
  root = root / "smoke_runs"
  root.mkdir(exist_ok=True)
  runs = {}

  def get(name: str):
    if name not in runs:
      from collapse_jax import experiment
      folder = root / re.sub(r"\W", "_", name)
      workdir, done = folder / "run", folder / "rows.json"
      folder.mkdir(exist_ok=True)
      with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():  # (a run cut short by a failing test resumes here)
          rows = experiment.train_and_evaluate(load_config(name), workdir)
          done.write_text(json.dumps(rows))
      runs[name] = workdir, json.loads(done.read_text())
    return runs[name]
  return get


# Python's cyclic garbage collector, tuned for a process that traces and keeps thousands of
# programs: by default it runs every 700 allocations and rescans the whole heap (every
# imported module, cached jaxpr and executable) often, a tenth of a test worker's CPU time
# (gc.callbacks, test_determinism + test_diffusion: 6.4 s of 49 s). Rarer young
# collections, and what collection imported frozen out of later scans: 2.4 s.
# (tests/launcher_batch.py's warm interpreter does the same before it forks.)
GC_THRESHOLDS = (10_000, 50, 1000)


def pytest_collection_finish(session):
  gc.collect()
  gc.freeze()


def pytest_configure(config):
  gc.set_threshold(*GC_THRESHOLDS)
  # xdist: hand out the units in the order pytest_collection_modifyitems gives them.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False
  # Many tests compile the same programs (a config run in several workdirs): reuse them.
  import jax
  from collapse_jax import rng
  rng.configure_jax()
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


# Under `-n 2` (`--dist=loadgroup`, pyproject.toml) the tests that share a module-scoped
# fixture (a trained run, a batch of launcher processes) go to one worker as one unit, so
# the fixture is made once (`smoke_run`'s runs need no group: the workers share them); and
# the units start longest first: a long unit dealt out last keeps one worker busy while the
# other idles. Seconds of one worker on a loaded 2-core machine (`--durations`; only the
# order counts), per group (file::fixture), test (file::name[id]) or test function
# (file::name). Where two units compile the same programs, the one that runs second is
# listed at its cost with the programs in the compilation cache, so it starts after the
# first: the digits smoke run before the report of two of its policies, the FFHQ and
# molecule smoke runs before their resume tests.
SLOW = {
    "test_segments.py::uninterrupted": 180,
    "test_accelerator_check.py::test_tiny_check_runs_every_section_and_records_finite_figures": 60,
    "test_segments.py::test_a_curated_generation_resumes_inside_its_chunked_sampling_bitwise": 50,
    "test_multihost.py::test_two_processes_match_one": 170,
    "test_fsdp.py::test_fsdp_matches_one_device": 140,
    "test_configs.py::test_smoke_variant_runs_end_to_end[digits_vae:accumulate]": 105,
    "test_configs.py::test_smoke_variant_runs_end_to_end[mnist_vae:accumulate]": 100,
    "test_configs.py::test_smoke_variant_runs_end_to_end[ffhq:accumulate]": 95,
    "test_cli.py::test_workdir_of_another_config_is_refused_continuation_resumes_overwrite_"
    "restarts": 90,
    "test_lm_loop.py::test_eight_devices_match_one": 50,
    "test_lm_loop.py::test_resumed_run_equals_uninterrupted_one": 40,
    "test_diffusion.py::test_ffhq_smoke_end_to_end_and_resume": 75,
    "test_configs.py::test_quickstart_first_generations_are_golden": 50,
    "test_report.py::comparison": 65,
    "test_configs.py::test_smoke_variant_runs_end_to_end[cifar10:mix,process=otcfm]": 56,
    "test_vae.py::test_training_lowers_the_test_loss[bernoulli]": 52,
    "test_configs.py::test_smoke_variant_runs_end_to_end[cifar10:mix,process=ddpm]": 51,
    "test_configs.py::test_smoke_variant_runs_end_to_end[cifar10:mix,process=edm]": 47,
    "test_configs.py::test_smoke_variant_runs_end_to_end[molecules:accumulate]": 45,
    "test_configs.py::test_smoke_variant_runs_end_to_end[molecules:accumulate_subsample]": 45,
    "test_configs.py::test_smoke_variant_runs_end_to_end[molecules:replace]": 44,
    "test_configs.py::test_smoke_variant_runs_end_to_end[mnist_vae:accumulate_subsample]": 42,
    "test_configs.py::test_smoke_variant_runs_end_to_end[mnist_vae:replace]": 40,
    "test_determinism.py::test_rerun_continuation_and_chunking_are_bitwise_identical": 40,
    "test_multidevice.py::test_eight_devices_match_one": 38,
    "test_molecules.py::test_smoke_resumes_bitwise": 37,
    "test_architecture.py::test_bfloat16_mixed_precision_is_finite_and_close": 36,
    "test_configs.py::test_smoke_variant_runs_end_to_end[kde_moons:accumulate]": 35,
    "test_diffusion.py::test_unet_loss_decreases_and_samples_are_images": 34,
    "test_configs.py::test_smoke_variant_runs_end_to_end[toy_flow:replace]": 34,
    "test_checkpoint_damage.py::finished": 33,
    "test_configs.py::test_smoke_variant_runs_end_to_end[tinystories:accumulate]": 32,
    "test_layers_unet.py::test_unet_runs_and_depends_on_noise_level": 32,
    "test_configs.py::test_smoke_variant_runs_end_to_end[toy_flow:accumulate]": 31,
    "test_diffusion_core.py::test_padding_changes_nothing": 30,
    "test_cli.py::test_report_compares_runs": 29,
    "test_linreg_theory.py::test_subsample_is_bounded_and_above_accumulate": 25,
    "test_configs.py::test_smoke_variant_runs_end_to_end[tinystories:replace]": 24,
    "test_configs.py::test_smoke_variant_runs_end_to_end[tinystories:accumulate_subsample]": 24,
    "test_configs.py::test_smoke_variant_runs_end_to_end[kde_moons:replace]": 24,
    "test_geodiff.py::test_objective_ignores_padding_and_samples_stay_on_real_atoms": 23,
    "test_diffusion.py::test_toy_sampling_and_training": 21,
    "test_configs.py::test_smoke_variant_runs_end_to_end[kde_moons:accumulate_subsample]": 21,
    "test_geodiff.py::params": 21,
    "test_flow_matching.py::test_loss_decreases_on_a_tiny_2d_run": 21,
    "test_inception_port.py::test_features_match_pytorch_fid": 21,
    "test_tinystories.py::test_token_weighted_loss_falls_on_a_tiny_run": 20,
    "test_cli.py::refused": 20,
    "test_sweep.py::test_scalar_points_run_side_by_side_equal_runs_alone_and_continue_alone": 25,
}


def _module_fixtures(item) -> list[str]:
  """The module-scoped fixtures (of its file) this test uses."""
  info = getattr(item, "_fixtureinfo", None)
  return sorted(name for name in getattr(item, "fixturenames", ())
                if info and info.name2fixturedefs.get(name)
                and info.name2fixturedefs[name][-1].scope == "module")


def _groups(items) -> dict[int, str]:
  """id(test) -> its xdist group: the tests of a file linked by module-scoped fixtures they
  share (directly or through others), named after the file and the first fixture."""
  parent = {}

  def root(key):
    while parent.setdefault(key, key) != key:
      key = parent[key]
    return key
  used = {}
  for item in items:
    keys = [(item.path.name, name) for name in _module_fixtures(item)]
    if keys:
      used[id(item)] = keys[0]
      for key in keys:
        parent[root(key)] = root(keys[0])
  members = {}
  for key in list(parent):
    members.setdefault(root(key), []).append(key)
  name = {r: "::".join(min(keys)) for r, keys in members.items()}
  return {i: name[root(key)] for i, key in used.items()}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
  groups = _groups(items)
  units = {}
  for item in items:
    group = groups.get(id(item))
    if group:
      item.add_marker(pytest.mark.xdist_group(group))
    unit = units.setdefault(group or item.nodeid, [len(units), 0.0])
    unit[1] = max(unit[1], SLOW.get(group, 0), SLOW.get(f"{item.path.name}::{item.name}", 0),
                  SLOW.get(f"{item.path.name}::{getattr(item, 'originalname', item.name)}", 0))
  unit_of = lambda item: units[groups.get(id(item)) or item.nodeid]
  order = {id(item): i for i, item in enumerate(items)}
  items.sort(key=lambda item: (-unit_of(item)[1], unit_of(item)[0], order[id(item)]))
