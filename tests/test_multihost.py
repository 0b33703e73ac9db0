"""Two processes on 127.0.0.1 (jax.distributed, Gloo collectives between CPU devices) run one
mesh over both and give the single-process metrics; only process 0 writes them. Each loads
only its devices' rows of the real data."""
import json
import os
import socket
import sys

import numpy as np

import launcher_batch
from conftest import ROOT, load_config, read_metrics


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two(args_of, devices: int = 1) -> list[tuple[int, str, str]]:
  """Runs ``python args_of(i)... --coordinator_address ... --process_id=i`` as processes 0
  and 1 of one run; returns their exit codes, stdout and stderr. They compile as this
  process does (the suite's XLA flags: tests/conftest.py)."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                                   f"--xla_force_host_platform_device_count={devices}")
  procs = [launcher_batch.Popen(
      [sys.executable, *args_of(i), f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"], cwd=ROOT, env=env)
      for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  return [(p.returncode, *out) for p, out in zip(procs, outs)]


def _two_processes(args, devices: int = 1) -> list[tuple[str, str]]:
  """`_run_two` of the same ``args`` in both processes, which must both succeed; returns
  their stdout and stderr."""
  outs = []
  for rc, out, err in _run_two(lambda i: args, devices):
    assert rc == 0, err[-3000:]
    outs.append((out, err))
  return outs


def _assert_close(one: list[dict], two: list[dict]) -> None:
  assert len(one) == len(two)
  for a, b in zip(one, two):
    assert a.keys() == b.keys()
    for k in a:
      # The pool is split over the two processes' devices: cross-device float32 sums.
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_two_processes_match_one(smoke_run, tmp_path):
  """Two processes give the single-process metrics (the suite's shared smoke run), and only
  process 0 reports progress: the MNIST VAE, its dataset split over the processes, uint8
  pixels gathered across them (a padding row: `test_each_process_loads_only_its_devices_rows`)."""
  name = "mnist_vae:replace"
  file, _, policy = name.partition(":")
  workdir = tmp_path / "two"
  outs = _two_processes([str(ROOT / "launch" / "main.py"),
                         f"--config=configs/{file}.py:{policy},smoke", f"--workdir={workdir}"])
  n = load_config(name).num_generations
  assert f"generation {n - 1} done ({n} of {n})" in outs[0][1]
  assert f"generation {n - 1} done ({n} of {n})" not in outs[1][1]
  _assert_close(smoke_run(name)[1], read_metrics(workdir))


def test_processes_given_different_workdirs_are_refused_together(tmp_path):
  """A multi-host run whose processes do not see one folder (different paths, or each its
  own disk) stops on every process with one sentence, instead of waiting forever for the
  others' share of each collective checkpoint; lock files an earlier two-process run left
  in each folder do not pass for a shared one."""
  for i in range(2):
    (tmp_path / str(i)).mkdir()
    (tmp_path / str(i) / f".lock.{1 - i}").touch()
  results = _run_two(lambda i: [str(ROOT / "launch" / "main.py"),
                                "--config=configs/linreg.py:replace,smoke",
                                f"--workdir={tmp_path / str(i)}"])
  for rc, _, err in results:
    assert rc == 2, err[-3000:]
    assert "error: The 2 processes of this run do not share one workdir" in err
    assert "Traceback" not in err
  assert not (tmp_path / "0" / "config.json").exists()
  assert not list(tmp_path.glob("*/.lock.shared.*"))  # the marker is removed


def test_processes_given_different_configs_are_refused_together(tmp_path):
  """Hosts whose commands differ (here a seed) would compile different programs and wait
  on each other's collectives: every process stops in one sentence first."""
  results = _run_two(lambda i: [str(ROOT / "launch" / "main.py"),
                                "--config=configs/linreg.py:replace,smoke",
                                f"--config.seed={i}", f"--workdir={tmp_path}"])
  for rc, _, err in results:
    assert rc == 2, err[-3000:]
    assert "error: The 2 processes of this run were given different configs" in err
  assert not list(tmp_path.iterdir())


# Each process places its rows of 7 on its 2 devices (padded to 8); a jitted sum sees them all.
PLACE = """
import json, sys
import numpy as np
from collapse_jax.parallel import distributed, mesh as mesh_lib
args = dict(a[2:].split("=") for a in sys.argv[1:])
distributed.initialize(args["coordinator_address"], int(args["num_processes"]),
                       int(args["process_id"]))
import jax
asked = []
def load(rows):
  asked.append(rows)
  return {"train": np.arange(1, 8, dtype=np.uint8)[slice(*rows)], "test": np.ones(2)}
mesh = mesh_lib.make_mesh(-1)
consts = mesh_lib.place_consts(load, 7, mesh)
total = jax.jit(lambda c: c["train"].astype(np.int32).sum() + c["test"].sum(),
                out_shardings=mesh_lib.replicated(mesh))(consts)
shards = sorted((s.index[0].start, s.data.tolist()) for s in consts["train"].addressable_shards)
print("PLACED" + json.dumps({"asked": asked, "shards": shards, "total": float(total),
                             "shape": consts["train"].shape}))
"""


def test_each_process_loads_only_its_devices_rows():
  outs = _two_processes(["-c", PLACE], devices=2)
  placed = [json.loads(out.split("PLACED")[-1]) for out, _ in outs]
  assert [p["asked"] for p in placed] == [[[0, 4]], [[4, 7]]]
  assert placed[0]["shards"] == [[0, [1, 2]], [2, [3, 4]]]
  assert placed[1]["shards"] == [[4, [5, 6]], [6, [7, 0]]]  # the padding row: zeros
  assert all(p["total"] == 28 + 2 and p["shape"] == [8] for p in placed)
