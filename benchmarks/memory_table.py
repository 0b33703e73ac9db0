"""What a paper-scale run must hold, per device, and which meshes fit it.

    python benchmarks/memory_table.py [--devices 1,8,16,64] [--hbm_gib 16,80] [--json PATH]

For FFHQ-64 accumulate (configs/ffhq_accumulate.py, 10 generations) and TinyStories
accumulate (configs/tinystories.py:accumulate, GPT-2 9M and Llama-2 126M) it reports, from the
real configs and families (shapes only: no dataset is read, nothing is trained):
  pool         the accumulated pool at its largest (rows x stored bytes + provenance tags):
               sharded over every device of the mesh (parallel/mesh.py)
  state        parameters, optimizer state and EMA (float32): replicated over ``data``,
               divided by the ``fsdp`` axis
  activations  XLA's temporary buffers of one compiled training step at the per-device batch
               (``compiled.memory_analysis()`` on this CPU: a host-compiler estimate; GPU/TPU
               compilers fuse differently, so treat it as the order of magnitude)
and, for each device count, the per-device total on the cheapest mesh (smallest fsdp) that
fits each memory size.
"""
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402  (benchmarks/, the script's directory)
from collapse_jax import host_memory, validate  # noqa: E402
from collapse_jax.data.source import RowSpec, Task  # noqa: E402
from collapse_jax.loop.pool import TrainView, DataPool  # noqa: E402
from collapse_jax.models import base as model_base  # noqa: E402
from collapse_jax.models import training  # noqa: E402

GIB = 2 ** 30


def load(name: str, arg: str | None):
  spec = importlib.util.spec_from_file_location("cfg", ROOT / "configs" / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def measure(title: str, config, row_spec: RowSpec, stored_row_bytes: int) -> dict:
  layout = validate.policy_of(config).layout(config.num_generations)
  model = model_base.family(config.model.name).build(config, layout, row_spec)
  task = Task(test={k: jnp.asarray(v) for k, v in row_spec.zeros(1).items()}, aux={})
  state = jax.eval_shape(model.init, jax.random.PRNGKey(0), task)
  params = host_memory.nbytes(state["params"])
  # One training step at a per-device batch, compiled for this CPU.
  batch = {k: jax.ShapeDtypeStruct((model.budget.batch_size,) + s, jnp.dtype(d))
           for k, (s, d) in row_spec.fields.items()}

  def step(state, batch):
    pool = DataPool.create(batch, layout.__class__(
        n_real=model.budget.batch_size, n_fresh=0, n_synth=0, num_blocks=0))
    view = TrainView(pool=pool, counts=jnp.ones(model.budget.batch_size, jnp.int32),
                     generation=jnp.int32(0))
    return training.train_segment(state, view, jax.random.PRNGKey(0), model.loss,
                                  model.budget, state["step"], jnp.int32(1), 1)[0]

  compiled = jax.jit(step).lower(state, batch).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  rows = layout.used
  return {"title": title, "rows": rows, "pool": rows * (stored_row_bytes + 5),
          "params": params, "state": host_memory.nbytes(state), "activations": temp,
          "batch": model.budget.batch_size}


TARGET = "no speed target: per-device memory of paper-scale runs, meshes that fit 16 / 80 GiB"


def main(argv=None):
  parser = harness.parser(__doc__)
  parser.add_argument("--devices", default="1,8,16,64")
  parser.add_argument("--hbm_gib", default="16,80")
  args = harness.parse(parser, argv, ("devices", "hbm_gib"))
  devices = [int(d) for d in args.devices.split(",")]
  hbm = [float(h) for h in args.hbm_gib.split(",")]
  env = harness.environment_line()

  ffhq = load("ffhq_accumulate.py", None)
  ffhq.num_generations = 10
  runs = [measure("FFHQ-64 accumulate, 10 generations (EDM DDPM++)", ffhq,
                  RowSpec(fields={"image": ((64, 64, 3), "float32")}, data="image",
                          pixels=("image",)), 64 * 64 * 3)]
  for preset in ("gpt2-9m", "llama2-126m"):
    ts = load("tinystories.py", f"accumulate,preset={preset}")
    ctx = ts.data.context
    runs.append(measure(f"TinyStories accumulate, 5 generations ({preset})", ts,
                        RowSpec(fields={"tokens": ((ctx,), "uint16")}, data="tokens"),
                        2 * ctx))

  for r in runs:
    print(f"\n{r['title']}: pool {r['rows']:,} rows = {r['pool'] / GIB:.1f} GiB; parameters "
          f"{r['params'] / GIB:.2f} GiB, with optimizer and EMA {r['state'] / GIB:.2f} GiB; "
          f"activations of one step at batch {r['batch']} {r['activations'] / GIB:.2f} GiB")
    print("  devices | per-device GiB (fsdp=1) | fits " + " / ".join(f"{h:g} GiB" for h in hbm))
    r["meshes"] = {}
    for n in devices:
      # The global batch is split over ``data``; state divided by fsdp, pool by every device.
      need = lambda fsdp: (r["pool"] / n + r["state"] / fsdp
                           + r["activations"] * fsdp / n) / GIB
      fits = []
      for h in hbm:
        ok = [f for f in (1, 2, 4, 8, 16, 32, 64) if n % f == 0 and need(f) <= 0.9 * h]
        fits.append(f"data={n // ok[0]} x fsdp={ok[0]}" if ok else "no")
      print(f"  {n:7d} | {need(1):23.2f} | " + " / ".join(fits))
      r["meshes"][n] = {"per_device_gib_fsdp1": need(1), "fits": dict(zip(hbm, fits))}
  # The headline: the fewest devices whose mesh fits every run, per memory size, and each
  # run's per-device need on the first two device counts.
  fewest = [[n for n in devices if all(r["meshes"][n]["fits"][h] != "no" for r in runs)]
            for h in hbm]
  fits = ", ".join(f"{h:g} GiB from {ns[0]} device(s)" if ns else f"{h:g} GiB on none"
                   for h, ns in zip(hbm, fewest))
  need = ", ".join(
      f"{r['title'].split()[0]} {r['title'].split('(')[-1][:-1]} "
      + " / ".join(f"{r['meshes'][n]['per_device_gib_fsdp1']:.1f}" for n in devices[:2])
      for r in runs)
  headline = (f"every run fits {fits}; GiB per device on "
              f"{' / '.join(map(str, devices[:2]))} device(s): {need}")
  harness.write(args, "memory_table", TARGET, headline, {"runs": runs}, env)


if __name__ == "__main__":
  main()
