"""Parameters, optimizer state and EMA sharded over an ``fsdp`` mesh axis give the metrics of
one device (float32 rounding of cross-device reductions aside), for the neural families.

The sharded side runs in its own process (XLA's device count is fixed at start-up),
compiling as this one does (the suite's XLA flags); the one-device side runs here.
"""
import json
import os
import sys

import numpy as np

import launcher_batch
from conftest import ROOT, load_config

def _config(name, data, fsdp):
  config = load_config(name)
  config.mesh.data, config.mesh.fsdp = data, fsdp
  config.evals = {}
  if "conv_impl" in config.model:
    config.model.conv_impl = "xla"  # the CPU matmul convs are single-device kernels
  return config


SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from test_fsdp import _config
from collapse_jax import experiment
out = {{}}
for name in {names!r}:
  config = _config(name, {data}, {fsdp})
  out[name] = experiment.train_and_evaluate(config, {workdir!r} + "/" + name)
print("ROWS" + json.dumps(out))
"""

# Families whose smoke states have leaves above FSDP_MIN_SIZE only when widened: the test
# lowers the threshold so every sizeable leaf is sharded.
# The VAE and the diffusion core (which flow matching and the geodiff family share).
NAMES = ["digits_vae:replace", "toy_diffusion:replace"]


def _run(workdir, devices, data, fsdp):
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                                   f"--xla_force_host_platform_device_count={devices}")
  code = SCRIPT.format(tests=str(ROOT / "tests"), names=NAMES, workdir=str(workdir),
                       data=data, fsdp=fsdp)
  code = "import collapse_jax.parallel.mesh as m; m.FSDP_MIN_SIZE = 64\n" + code
  out = launcher_batch.run([sys.executable, "-c", code], env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.split("ROWS")[-1])


def test_fsdp_matches_one_device(tmp_path, monkeypatch):
  import jax
  from collapse_jax import experiment
  from collapse_jax.parallel import mesh
  assert jax.device_count() == 1
  monkeypatch.setattr(mesh, "FSDP_MIN_SIZE", 64)  # as the sharded process has it
  one = {name: experiment.train_and_evaluate(_config(name, 1, 1), tmp_path / "one" / name)
         for name in NAMES}
  sharded = _run(tmp_path / "sharded", 8, 2, 4)
  for name in NAMES:
    for a, b in zip(one[name], sharded[name]):
      for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")


def test_fsdp_spec_shards_the_largest_divisible_dimension():
  from jax.sharding import PartitionSpec as P
  from collapse_jax.parallel.mesh import fsdp_spec
  assert fsdp_spec((2, 256, 512), 4) == P(None, None, "fsdp")
  assert fsdp_spec((2, 4096, 6), 4) == P(None, "fsdp")
  assert fsdp_spec((2, 510, 33), 4) == P()          # nothing divides: replicated
  assert fsdp_spec((2, 16), 4) == P()               # small: replicated
  assert fsdp_spec((2, 256, 512), 1) == P()
