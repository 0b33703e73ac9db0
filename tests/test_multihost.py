"""Two processes on 127.0.0.1 (jax.distributed, Gloo collectives between CPU devices) run one
mesh over both and give the single-process metrics; only process 0 writes them."""
import os
import socket
import subprocess
import sys

import numpy as np

from collapse_jax import experiment

from conftest import ROOT, load_config, read_metrics


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  workdir, port = tmp_path / "two", _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen(
      [sys.executable, str(ROOT / "launch" / "main.py"),
       "--config=configs/gaussian_replace.py:smoke", f"--workdir={workdir}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "generation 3/3" in outs[0][1] and "generation 3/3" not in outs[1][1]
  one = experiment.train_and_evaluate(load_config("gaussian_replace"), tmp_path / "one")
  two = read_metrics(workdir)
  assert len(one) == len(two)
  for a, b in zip(one, two):
    assert a.keys() == b.keys()
    for k in a:
      # The pool is split over the two processes' devices: cross-device float32 sums.
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
