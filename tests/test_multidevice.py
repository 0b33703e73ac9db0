"""The loop on 8 fake CPU devices gives the metrics it gives on 1.

The 8 devices run in their own process (XLA's device count is fixed at start-up), compiling
as this one does (the suite's XLA flags); the 1-device side is this process's, the smoke run
the suite shares.
"""
import json
import os
import sys

import numpy as np
import pytest

import launcher_batch
from conftest import ROOT, load_config

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from conftest import load_config
from collapse_jax import experiment
config = load_config({name!r})
config.num_generations = 3
rows = experiment.train_and_evaluate(config, {workdir!r})
print("ROWS" + json.dumps({{"devices": jax.device_count(), "rows": rows}}))
"""


def _devices_env(devices):
  return dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                                    f"--xla_force_host_platform_device_count={devices}")


def _run(name, workdir, devices):
  code = SCRIPT.format(tests=str(ROOT / "tests"), name=name, workdir=str(workdir))
  out = launcher_batch.run([sys.executable, "-c", code], env=_devices_env(devices))
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split("ROWS")[-1])
  assert result["devices"] == devices
  return result["rows"]


@pytest.mark.parametrize("name", ["linreg:accumulate_subsample", "gaussian:replace"])
def test_eight_devices_match_one(name, smoke_run, tmp_path):
  import jax
  assert jax.device_count() == 1
  assert load_config(name).num_generations == 3  # the script's: the smoke run is the 1-device run
  one, eight = smoke_run(name)[1], _run(name, tmp_path / "eight", 8)
  assert len(one) == len(eight)
  for a, b in zip(one, eight):
    assert a.keys() == b.keys()
    for k in a:
      # Sums over the sharded pool axis become cross-device reductions: float32 rounding.
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


BATCH_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp
from conftest import load_config
from collapse_jax import experiment, rng, validate
from collapse_jax.loop.generation import CompiledLoop
from collapse_jax.parallel import mesh as mesh_lib
c = load_config("digits_vae:replace")
mesh = mesh_lib.from_config(c.mesh)
layout = validate.policy_of(c).layout(c.num_generations, multiple_of=mesh.size)
loop = experiment.build_loop(c, layout)
consts, roots = loop.source.consts(), rng.seed_keys(0, 1)
compiled = CompiledLoop(loop, mesh, consts, roots)
carry = jax.tree.map(lambda x: x[0], compiled.init(consts, roots))
view = compiled.loop.view(carry, jnp.int32(0))
batch = jax.jit(lambda v: v.gather(jnp.arange(4 * mesh.size)))(view)["image"]
print("SPEC", batch.sharding.spec, len(batch.addressable_shards[0].data))
"""


def test_a_training_batch_is_split_over_the_devices():
  # A batch gathered with replicated row indices comes out replicated unless the view
  # constrains it: every device would then compute the whole global batch.
  out = launcher_batch.run([sys.executable, "-c", BATCH_SCRIPT.format(tests=str(ROOT / "tests"))],
                           env=_devices_env(4))
  assert out.returncode == 0, out.stderr[-3000:]
  spec, rows = out.stdout.split("SPEC")[-1].rsplit(maxsplit=1)
  assert "data" in spec and int(rows) == 4, out.stdout
