"""Accelerator check: our models at paper scale on one GPU, in one command (issue 26, item 1).

On a fresh single-GPU machine (H100 / H200; nothing is downloaded once the packages are
installed, so the install needs a package index or a wheelhouse), from the repository root:

    pip install -c requirements-lock.txt -e . "jax[cuda12]==0.10.2" && \\
      timeout 480 python benchmarks/accelerator_check.py --json $OUT/accel.json \\
      --compilation_cache /tmp/jax_cache

Sized (by estimate: not yet run on a GPU) to finish in about 7 minutes on one H100,
compilation included; `timeout 480` leaves room to run it twice in a 15-minute window (the
second run reuses /tmp/jax_cache's compiled programs), and ``--time_budget_s`` (420) stops
training and skips sections not started once spent. It writes one JSON record (``--json``,
default ./accelerator_check.json, rewritten after every section, so a killed run keeps the
finished sections) and prints progress lines with elapsed seconds, then a Markdown table.
Exit 0 only if every section ran and passed its checks.

Sections (``--only lm,ddpmpp,geodiff``; ddpmpp = cifar10,ffhq64), each through the
package's own code: the config file (configs/*.py) at its paper settings, the family's
``build`` found by the registry (``models.base.family``), the family's ``loss`` in the one
optax loop (``training.train_segment``: batches drawn on device from a ``DataPool`` through
a ``TrainView``, mixed precision, clipping, Adam(W), EMA), and its ``sample``:
  lm        Llama-2 126M (nets/transformer.py 'llama2-126m'; configs/tinystories.py's
            optimizer, batch 32), bfloat16, sequence 512 (rows of 513 tokens): training
            tokens/s and MFU; decoding tokens/s with the KV cache (TransformerLM.sample,
            256 stories drawn to the full row)
  cifar10   EDM's DDPM++ UNet (configs/cifar10.py:process=edm: 128 channels, mult
            1,2,2,2, attention at 16, batch 128) on 32x32x3: training images/s and MFU;
            Heun sampling (18 steps, 35 network calls) images/s
  ffhq64    the same at 64x64x3 (configs/ffhq.py: dropout 0.05, 40 Heun steps)
  geodiff   GeoDiff's dual encoder at hidden 128 (configs/molecules.py: 6 SchNet, 4 GIN
            layers, batch 32) on rows of A = 45 atoms: training conformers/s
Each trains a few hundred steps on shape-correct data made here (a sparse bigram language,
smooth random images, random molecular trees with 3-D positions) and checks that the loss
falls and that losses and parameters are finite. With more than one local device the model
state is sharded over all of them (a 1 x n ``data`` x ``fsdp`` mesh, parallel/mesh.py) and
batches are split over them, as a run with ``mesh.fsdp = n`` does.

FLOPs: the LM's are counted analytically (6 N per trained token, N the parameters in
matmuls, plus 12 L s d for attention's scores and mixing); the UNet's and GeoDiff's are
XLA's count (``Lowered.cost_analysis()['flops']``) of one training step: the segment's loop
body counts once; GeoDiff's includes the pair tensors its custom VJPs recompute. MFU =
FLOPs per step / seconds per step / (peak x devices), the peak the device's dense bfloat16
figure (H100 SXM and H200: 989 TFLOP/s; `PEAK_BF16_TFLOPS`) for every section, whatever
its dtype (GeoDiff trains in float32, as its config says); an unknown device prints n/a
unless ``--peak_tflops`` is given. Targets (stated, not asserted): MFU >= 40% for the LM,
>= 35% for DDPM++ training, on one H100.

``--tiny`` runs the same code paths at tiny shapes in well under a minute on a CPU (the
test, tests/test_accelerator_check.py, runs it). A section that raises is recorded with
its error and the check goes on; one that cannot trace in bfloat16 is recorded and rerun
in float32, so a GPU window still yields its numbers.

    python benchmarks/accelerator_check.py --tiny --json /tmp/accel.json     # CPU, ~40 s
    python benchmarks/accelerator_check.py --only lm,geodiff                 # a subset
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import statistics
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # collapse_jax without an installed package (as memory_table)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import harness  # noqa: E402  (benchmarks/, the script's directory)
from collapse_jax import rng, variants  # noqa: E402
from collapse_jax.data import molecule_chemistry as chem, molecules, tinystories  # noqa: E402
from collapse_jax.data import tokenizer as tok  # noqa: E402
from collapse_jax.data.source import RowSpec, Task, to_pixels  # noqa: E402
from collapse_jax.loop.pool import DataPool, PoolLayout, TrainView  # noqa: E402
from collapse_jax.models import base, training  # noqa: E402
from collapse_jax.nets import transformer as tfm  # noqa: E402
from collapse_jax.parallel import mesh as mesh_lib  # noqa: E402

CONFIGS = ROOT / "configs"
SECTIONS = ("lm", "cifar10", "geodiff", "ffhq64")  # run in this order: the costliest last
ALIASES = {"ddpmpp": ("cifar10", "ffhq64")}
# Dense (no sparsity) bfloat16 tensor-core peak per device, TFLOP/s, by a substring of
# jax's device_kind; the first match wins (so the specific names come first).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0),
                    ("H200", 989.0), ("H100", 989.0), ("A100", 312.0))
TARGET_MFU = {"lm": 0.40, "cifar10": 0.35, "ffhq64": 0.35}
TARGET = ("on one H100: MFU >= 40% for the 126M Llama LM, >= 35% for DDPM++ training; every "
          "section's loss falls and stays finite")


# ----------------------------------------------------------------------------------------
# Sizes: the paper-scale run and its --tiny twin (same code, tiny shapes).


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What one section runs. ``overrides``: config.model fields (``unet.x``: the UNet's)."""
  steps: int              # training steps, in segments of ``segment``
  segment: int
  rows: int               # rows of made-up data in the pool
  overrides: dict
  sample: int = 0         # images / stories per sampling call (0: no sampling timed)
  shape: tuple = ()       # image shape, or (context,) for the LM, or (atoms,) for GeoDiff


FULL = {
    "lm": Sizes(300, 50, 4096, {"preset": "llama2-126m", "dtype": "bfloat16"}, 256, (513,)),
    "cifar10": Sizes(300, 50, 2048, {}, 256, (32, 32, 3)),
    "ffhq64": Sizes(200, 40, 1024, {}, 256, (64, 64, 3)),
    "geodiff": Sizes(400, 50, 512, {}, 0, (45,)),
}
TINY = {
    # Rows of 65 tokens: decoding then crosses a KV-cache block (64), as the full rows do.
    "lm": Sizes(20, 10, 64, {"preset": "llama2-tiny", "dtype": "bfloat16", "batch_size": 4,
                             "sample_batch_size": 4}, 4, (65,)),
    "cifar10": Sizes(20, 10, 32, {"batch_size": 4, "sampler_steps": 3,
                                  "unet.base_channels": 8, "unet.channel_mult": (1,),
                                  "unet.num_res_blocks": 1, "unet.attn_resolutions": ()},
                     4, (8, 8, 3)),
    # CIFAR-10's tiny programs exactly (its dropout too): with a persistent compilation
    # cache (the tests have one) this section compiles nothing; without, it costs ~10 s.
    "ffhq64": Sizes(20, 10, 32, {"batch_size": 4, "sampler_steps": 3, "unet.dropout": 0.1,
                                 "unet.base_channels": 8, "unet.channel_mult": (1,),
                                 "unet.num_res_blocks": 1, "unet.attn_resolutions": ()},
                    4, (8, 8, 3)),
    "geodiff": Sizes(20, 10, 16, {"hidden_dim": 8, "num_convs": 1, "num_convs_local": 1,
                                  "batch_size": 4}, 0, (16,)),
}


# ----------------------------------------------------------------------------------------
# Progress, devices, peak.


class Clock:
  """Seconds since the check started; ``log`` prints a progress line at once (a killed run's
  log then says how far each section got)."""

  def __init__(self):
    self.start = time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def log(self, section: str, message: str) -> None:
    print(f"[{self.elapsed():6.1f}s] {section}: {message}", flush=True)


def peak_tflops(device_kind: str, override: float | None) -> tuple[float | None, str]:
  """(peak dense bf16 TFLOP/s of one device or None, where the figure came from)."""
  if override:
    return override, "--peak_tflops"
  for name, tflops in PEAK_BF16_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops, f"dense bfloat16 peak of {name} (PEAK_BF16_TFLOPS)"
  return None, f"unknown device {device_kind!r}: MFU n/a (give --peak_tflops)"


def state_shardings(abstract_state, mesh):
  """The loop's fsdp rule (`mesh_lib.fsdp_spec`) for a state without the loop's leading
  seed axis: each large leaf split over ``fsdp`` along its largest divisible dimension."""
  n = mesh.shape["fsdp"]

  def one(leaf):
    spec = mesh_lib.fsdp_spec((1,) + tuple(leaf.shape), n)  # the rule expects [seeds, ...]
    return NamedSharding(mesh, P(*tuple(spec)[1:]))
  return jax.tree.map(one, abstract_state)


def all_finite(tree) -> bool:
  return bool(all(np.all(np.isfinite(np.asarray(x, np.float32)))
                  for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)))


def num_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------------------
# Made-up data of the right shapes (no downloads on the GPU machine). Each has structure a
# model can learn within a few hundred steps, so "the loss falls" means something.


def bigram_tokens(n: int, context: int, vocab: int, seed: int = 0) -> np.ndarray:
  """``[n, context]`` token rows: BOS, then a walk of a sparse bigram chain (each token has 4
  possible successors): learnable down to ln 4 nats a token from ln(vocab) at init. No EOS
  and no PAD, so every position is a target and decoding runs to the end of the row."""
  r = np.random.default_rng(seed)
  first = 4  # ids below are PAD, UNK, BOS, EOS (data/tokenizer.py)
  successors = r.integers(first, vocab, (vocab, 4))
  rows = np.empty((n, context), np.int64)
  rows[:, 0] = tok.BOS
  rows[:, 1] = r.integers(first, vocab, n)
  for t in range(2, context):
    rows[:, t] = successors[rows[:, t - 1], r.integers(0, 4, n)]
  return rows.astype(tinystories.row_dtype(vocab))


def smooth_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
  """``[n, h, w, c]`` uint8 pixels (as the images source hands the pool its rows): a colour
  gradient plus 3 coloured Gaussian blobs each, squashed into [-1, 1]."""
  r = np.random.default_rng(seed)
  h, w, c = shape
  yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
  img = (r.normal(0, 0.3, (n, 1, 1, c)) * yy[None, :, :, None]
         + r.normal(0, 0.3, (n, 1, 1, c)) * xx[None, :, :, None])
  for _ in range(3):
    cy, cx = r.uniform(-0.7, 0.7, (2, n, 1, 1))
    width = r.uniform(0.15, 0.5, (n, 1, 1))
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
    img = img + blob[..., None] * r.uniform(-1.5, 1.5, (n, 1, 1, c))
  return to_pixels(np.tanh(img).astype(np.float32))


def random_molecules(n_mols: int, confs: int, atoms: int, seed: int = 0) -> dict:
  """Molecule rows (data/molecules.py's `row_spec(atoms)`): ``n_mols`` random trees of
  2/3 .. all of ``atoms`` atoms (H, C, N, O), single bonds plus GeoDiff's 2- and 3-hop edge
  codes (`molecule_chemistry.extend_order`), each with ``confs`` conformers: a 3-D walk
  along the tree (1.5 A bonds) plus 0.1 A of noise per conformer, centred. Rows
  ``[n_mols * confs, ...]``, molecule by molecule."""
  r = np.random.default_rng(seed)
  rows = {"pos": [], "atom_mask": [], "atom_type": [], "edge_type": [], "mol_id": []}
  for m in range(n_mols):
    k = int(r.integers(max(2, 2 * atoms // 3), atoms + 1))
    parent = np.array([0] + [int(r.integers(max(0, i - 3), i)) for i in range(1, k)])
    bonds = np.zeros((k, k), np.int8)
    bonds[np.arange(1, k), parent[1:]] = bonds[parent[1:], np.arange(1, k)] = chem.SINGLE
    step = r.normal(size=(k, 3))
    step *= 1.5 / np.linalg.norm(step, axis=1, keepdims=True)
    pos = np.zeros((k, 3))
    for i in range(1, k):
      pos[i] = pos[parent[i]] + step[i]
    atom_type = r.choice([1, 6, 7, 8], size=k, p=[0.45, 0.4, 0.08, 0.07])
    edges = np.zeros((atoms, atoms), np.int8)
    edges[:k, :k] = chem.extend_order(bonds)
    for _ in range(confs):
      x = pos + r.normal(0, 0.1, pos.shape)
      padded = np.zeros((atoms, 3), np.float32)
      padded[:k] = x - x.mean(0)
      rows["pos"].append(padded)
      rows["atom_mask"].append((np.arange(atoms) < k).astype(np.float32))
      rows["atom_type"].append(np.pad(atom_type, (0, atoms - k)).astype(np.int32))
      rows["edge_type"].append(edges)
      rows["mol_id"].append(m)
  spec = molecules.row_spec(atoms)
  return {f: np.asarray(v, spec.fields[f][1]) for f, v in rows.items()}


# ----------------------------------------------------------------------------------------
# Config -> family, through the registry.


def configured(config_file: str, variant: str | None, sizes: Sizes, overrides: dict):
  """``configs/<config_file>``'s config with the check's budget and ``overrides`` set:
  ``sizes.steps`` steps (no epochs, no longer generation 0, warm-up a tenth of the run), and
  config.model fields (``unet.x``: the UNet's setting x)."""
  c = variants.load_config(CONFIGS / config_file, variant)
  c.model.update({"steps": sizes.steps, "epochs": 0.0, "initial_steps": 0})
  if c.model.get("warmup_steps"):
    c.model.warmup_steps = max(1, sizes.steps // 10)  # tinystories' 1,000 outlast the run
  for key, value in {**sizes.overrides, **overrides}.items():
    group, _, field = key.rpartition(".")
    (c.model[group] if group else c.model)[field] = value
  # Batches are split over every device: round up to a multiple of their number.
  c.model.batch_size = -(-c.model.batch_size // jax.device_count()) * jax.device_count()
  return c


def build_family(config, spec: RowSpec):
  """The family ``config.model.name`` (registry), after its own config check."""
  module = base.family(config.model.name)
  problem = module.check_config(config, spec) if hasattr(module, "check_config") else None
  if problem:
    raise ValueError(f"config refused by {config.model.name}: {problem}")
  return module.build(config, None, spec)


# ----------------------------------------------------------------------------------------
# Training through the package's loop, timed segment by segment.


def place_pool(rows: dict, pixels: tuple[str, ...], mesh) -> TrainView:
  """A `TrainView` of every row of ``rows`` (leaves ``[n, ...]``) once: a pool of one real
  block, its rows split over the devices, batches split over them (``batch_sharding``)."""
  n = len(next(iter(rows.values())))
  layout = PoolLayout(n_real=n, n_fresh=0, n_synth=0, num_blocks=0, multiple_of=mesh.size)
  pool = DataPool.create(jax.tree.map(jnp.asarray, rows), layout, pixels)
  split = mesh_lib.examples(mesh)
  pool = jax.device_put(pool, jax.tree.map(lambda _: split, pool))
  counts = jax.device_put((np.arange(layout.capacity) < n).astype(np.int32), split)
  return TrainView(pool=pool, counts=counts, generation=jnp.int32(0), whole_blocks=True,
                   batch_sharding=split)


def train(model, view: TrainView, task: Task, mesh, sizes: Sizes, clock: Clock, name: str,
          deadline: float) -> tuple[dict, dict]:
  """Trains ``model`` (a `training.Trained` family) for ``sizes.steps`` steps on ``view``:
  `training.train_segment` jitted once (state donated and fsdp-sharded), called per segment
  of ``sizes.segment`` steps. Returns (final state, figures): compile seconds, seconds per
  step (median over the segments after the first), XLA's FLOPs of one step, the losses
  and the checks. Stops after a segment once ``deadline`` (clock seconds) has passed."""
  budget, length = model.budget, sizes.segment
  key = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(model.init, key, task)
  shardings = state_shardings(abstract, mesh)
  state = jax.jit(model.init, out_shardings=shardings)(key, task)

  def segment(state, view, key, stop):
    return training.train_segment(state, view, key, model.loss, budget, jnp.int32(0), stop,
                                  length)

  jitted = jax.jit(segment, out_shardings=(shardings, mesh_lib.replicated(mesh)),
                   donate_argnums=(0,))
  t0 = time.perf_counter()
  lowered = jitted.lower(state, view, key, jnp.int32(length))
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = step_flops(lowered, compiled, clock, name)
  clock.log(name, f"training step compiled in {compile_s:.1f} s; "
            f"{num_params(state['params']):,} parameters, batch {budget.batch_size}, "
            f"{budget.dtype}")
  losses, seconds = [], []
  for stop in range(length, sizes.steps + 1, length):
    t = time.perf_counter()
    state, out = compiled(state, view, key, jnp.int32(stop))
    losses.append(np.asarray(out))  # waits for the segment
    seconds.append(time.perf_counter() - t)
    clock.log(name, f"steps {stop - length}-{stop}: {1e3 * seconds[-1] / length:.1f} ms/step, "
              f"mean loss {losses[-1].mean():.4g}")
    if clock.elapsed() > deadline and len(seconds) >= 2:
      clock.log(name, "time budget spent: training stops here")
      break
  losses = np.concatenate(losses)
  k = max(1, len(losses) // 10)
  first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
  step_s = statistics.median(seconds[1:] or seconds) / length
  finite = bool(np.all(np.isfinite(losses))) and all_finite(state["params"])
  return state, {
      "steps": int(len(losses)), "segment_steps": length, "batch": budget.batch_size,
      "dtype": budget.dtype, "parameters": num_params(state["params"]),
      "compile_s": compile_s, "segment_s": seconds, "step_s": step_s,
      "steps_per_s": 1 / step_s, "examples_per_s": budget.batch_size / step_s,
      "xla_flops_per_step": flops, "loss_first": first, "loss_last": last,
      "loss_fell": last < first, "finite": finite,
      "segment_mean_losses": [float(x) for x in losses.reshape(-1, length).mean(1)]}


def step_flops(lowered, compiled, clock: Clock, name: str) -> float | None:
  """XLA's FLOP count of one training step: the segment is a while loop, whose body (one
  step) the cost analysis counts once. From the lowered program (before XLA's fusions), else
  the compiled one; None where the backend has neither (the figure is lost, not the run)."""
  for stage in (lowered, compiled):
    try:
      cost = stage.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      if cost and cost.get("flops"):
        return float(cost["flops"])
    except Exception as e:  # noqa: BLE001
      clock.log(name, f"no XLA cost analysis from {type(stage).__name__} "
                f"({type(e).__name__}: {e})")
  return None


def timed_calls(fn, args: tuple, repeats: int, clock: Clock, name: str, what: str
                ) -> tuple[object, float, float]:
  """(output, compile s, best s of ``repeats`` calls) of ``fn`` (jitted) on ``args``."""
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  clock.log(name, f"{what} compiled in {compile_s:.1f} s")
  best = math.inf
  for _ in range(repeats):
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t)
  return out, compile_s, best


def add_mfu(fig: dict, flops: float | None, peak: float | None, devices: int) -> None:
  """Achieved TFLOP/s and MFU (None without a FLOP count or a peak)."""
  fig["flops_per_step"] = flops
  fig["tflops_per_s"] = flops / fig["step_s"] / 1e12 if flops else None
  fig["mfu"] = (fig["tflops_per_s"] / (peak * devices)
                if fig["tflops_per_s"] is not None and peak else None)


# ----------------------------------------------------------------------------------------
# Sections. Each returns its figures: {"train": {...}, "sample": {...}, "checks": {...}}.


def lm_flops_per_token(c: tfm.TransformerConfig, seq: int) -> float:
  """Training FLOPs per token: 6 x the parameters in matmuls (attention projections, MLP,
  output head; the input embedding is a gather) + 12 L s d for attention's scores and
  weighted sum (computed over all ``seq`` positions, the causal mask applied after)."""
  mlp = (3 if c.mlp == "swiglu" else 2) * c.d_model * c.d_ff
  matmul_params = c.num_layers * (4 * c.d_model ** 2 + mlp) + c.d_model * c.vocab_size
  return 6 * matmul_params + 12 * c.num_layers * seq * c.d_model


def section_lm(sizes: Sizes, mesh, peak, clock: Clock, deadline: float, args) -> dict:
  """Llama-2 126M on bigram rows ``[rows, context]``: training tokens/s and MFU, decoding
  tokens/s (``TransformerLM.sample``: prefill, then one token a step with the KV cache)."""
  name, (context,) = "lm", sizes.shape
  c = configured("tinystories.py", None, sizes, {})
  c.data.context = context
  vocab = c.data.vocab_size
  spec = RowSpec(fields={tinystories.FIELD: ((context,), tinystories.row_dtype(vocab))},
                 data=tinystories.FIELD)
  model = build_family(c, spec)
  rows = bigram_tokens(sizes.rows, context, vocab)
  first_counts = np.bincount(rows[:, 1].astype(np.int64), minlength=vocab).astype(np.int32)
  task = Task(test={spec.data: jnp.asarray(rows[:8])},
              aux={"first_counts": jnp.asarray(first_counts)})
  clock.log(name, f"{c.model.preset} ({c.model.dtype}), {sizes.rows} rows of {context} tokens")
  state, fig = train(model, place_pool({spec.data: rows}, (), mesh), task, mesh, sizes, clock,
                     name, deadline)
  seq = context - 1  # inputs tokens[:, :-1], targets tokens[:, 1:]
  fig["unit"] = "stories"
  fig["tokens_per_step"] = fig["batch"] * seq
  fig["tokens_per_s"] = fig["tokens_per_step"] / fig["step_s"]
  analytic = lm_flops_per_token(model.net_config, seq) * fig["tokens_per_step"]
  add_mfu(fig, analytic, peak, mesh.size)
  fig["flops_source"] = "analytic 6N + 12 L s d per token"
  fig["xla_over_analytic"] = (fig["xla_flops_per_step"] / analytic
                              if fig["xla_flops_per_step"] else None)

  # Decoding: the family's sampler, one chunk of sample_batch_size stories.
  n = sizes.sample
  sample = jax.jit(lambda params, key: model.sample({"params": params}, task, key, n))
  out, compile_s, best = timed_calls(sample, (state["params"], jax.random.PRNGKey(1)),
                                     args.repeats, clock, name, f"decoding of {n} stories")
  prompt = 2 if model.prompt == "first_token" else 1
  drawn = np.asarray(out[spec.data])[:, prompt:]
  tokens = int(np.sum(drawn != tok.PAD))
  dec = {"stories": n, "prompt": model.prompt, "tokens": tokens, "compile_s": compile_s,
         "seconds": best, "tokens_per_s": tokens / best,
         "ms_per_step": 1e3 * best / max(1, context - prompt),
         "in_vocabulary": bool(np.all((drawn >= 0) & (drawn < vocab)))}
  clock.log(name, f"decoded {tokens} tokens in {best:.2f} s: {dec['tokens_per_s']:,.0f} tok/s")
  checks = {"finite": fig["finite"], "loss_fell": fig["loss_fell"],
            "decoded_in_vocabulary": dec["in_vocabulary"]}
  return {"model": f"{c.model.preset} seq {seq}", "train": fig, "sample": dec,
          "checks": checks, "target_mfu": TARGET_MFU[name]}


def section_unet(name: str, sizes: Sizes, mesh, peak, clock: Clock, deadline: float,
                 args) -> dict:
  """EDM's DDPM++ UNet (VP preconditioning) on smooth images ``[rows, h, w, 3]``: training
  images/s and MFU, Heun sampling images/s. Trains in ``--unet_dtype``; if that fails to
  trace or compile (recorded as an error) it reruns in float32, so the figures still come."""
  config_file, variant = {"cifar10": ("cifar10.py", "process=edm"),
                          "ffhq64": ("ffhq.py", None)}[name]
  spec = RowSpec(fields={"image": (tuple(sizes.shape), "float32")}, data="image",
                 pixels=("image",))
  images = smooth_images(sizes.rows, sizes.shape)
  task = Task(test={"image": jnp.asarray(images[:8].astype(np.float32) / 127.5 - 1)}, aux={})
  errors = []
  for dtype in dict.fromkeys([args.unet_dtype, "float32"]):
    c = configured(config_file, variant, sizes,
                   {"dtype": dtype, "unet.conv_impl": args.conv_impl,
                    "inference_batch_size": sizes.sample})
    model = build_family(c, spec)
    unet = c.model.unet
    clock.log(name, f"DDPM++ {unet.base_channels} ch x {tuple(unet.channel_mult)} at "
              f"{sizes.shape}, {dtype}, EDM {c.model.precond} preconditioning")
    try:
      state, fig = train(model, place_pool({"image": images}, spec.pixels, mesh), task, mesh,
                         sizes, clock, name, deadline)
      break
    except Exception as e:  # noqa: BLE001 (recorded; float32 is the fallback)
      if dtype == "float32":
        raise
      errors.append(f"training in {dtype} failed, rerun in float32: "
                    f"{type(e).__name__}: {str(e).splitlines()[0][:400]}")
      clock.log(name, errors[-1])
  add_mfu(fig, fig["xla_flops_per_step"], peak, mesh.size)
  fig["flops_source"] = "XLA cost analysis of one step"
  fig["unit"] = "images"

  n, steps = sizes.sample, c.model.sampler_steps
  sample = jax.jit(lambda ema, key: model.sample({"ema": ema}, task, key, n)["image"])
  out, compile_s, best = timed_calls(sample, (state["ema"], jax.random.PRNGKey(1)),
                                     args.repeats, clock, name,
                                     f"Heun sampling of {n} images ({steps} steps)")
  out = np.asarray(out)
  smp = {"images": n, "heun_steps": steps, "network_calls": 2 * steps - 1,
         "compile_s": compile_s, "seconds": best, "images_per_s": n / best,
         "finite": bool(np.all(np.isfinite(out))), "std": float(out.std())}
  clock.log(name, f"sampled {n} images in {best:.2f} s: {smp['images_per_s']:,.1f} img/s")
  checks = {"finite": fig["finite"], "loss_fell": fig["loss_fell"],
            "samples_finite": smp["finite"]}
  return {"model": f"EDM DDPM++ {sizes.shape[0]}x{sizes.shape[1]}", "train": fig,
          "sample": smp, "checks": checks, "target_mfu": TARGET_MFU[name], "errors": errors}


def section_geodiff(sizes: Sizes, mesh, peak, clock: Clock, deadline: float, args) -> dict:
  """GeoDiff's dual encoder on random molecules of ``A`` padded atoms: training
  conformers/s (and MFU against the bf16 peak, though it trains in float32)."""
  name, (atoms,) = "geodiff", sizes.shape
  c = configured("molecules.py", None, sizes, {})
  spec = molecules.row_spec(atoms)
  model = build_family(c, spec)
  rows = random_molecules(max(1, sizes.rows // 4), 4, atoms)
  task = Task(test=jax.tree.map(lambda x: jnp.asarray(x[:8]), rows), aux={})
  clock.log(name, f"hidden {c.model.hidden_dim}, {c.model.num_convs} SchNet + "
            f"{c.model.num_convs_local} GIN layers, {len(rows['pos'])} rows of {atoms} atoms")
  _, fig = train(model, place_pool(rows, (), mesh), task, mesh, sizes, clock, name, deadline)
  add_mfu(fig, fig["xla_flops_per_step"], peak, mesh.size)
  fig["flops_source"] = "XLA cost analysis of one step (recomputed pair tensors included)"
  fig["unit"] = "conformers"
  return {"model": f"GeoDiff hidden {c.model.hidden_dim}, A = {atoms}", "train": fig,
          "checks": {"finite": fig["finite"], "loss_fell": fig["loss_fell"]}}


RUNNERS = {"lm": section_lm, "geodiff": section_geodiff,
           "cifar10": functools.partial(section_unet, "cifar10"),
           "ffhq64": functools.partial(section_unet, "ffhq64")}


def run_section(name: str, sizes: Sizes, mesh, peak, clock: Clock, deadline: float, args,
                tiny: bool) -> dict:
  """One section, never raising: its figures with ``status`` "ok" (ran, checks passed),
  "failed" (raised, recorded in ``error``, or a check failed) or "skipped" (no time left).
  For --tiny a loss that did not fall is recorded but fails nothing (20 steps)."""
  if clock.elapsed() > deadline:
    clock.log(name, "skipped: the time budget is spent")
    return {"status": "skipped", "error": "not run: --time_budget_s spent"}
  t = time.perf_counter()
  clock.log(name, "start")
  try:
    out = RUNNERS[name](sizes, mesh, peak, clock, deadline, args)
  except Exception as e:  # noqa: BLE001 (one broken section must not waste the window)
    clock.log(name, f"FAILED: {type(e).__name__}: {e}")
    return {"status": "failed", "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-4000:], "seconds": time.perf_counter() - t}
  required = {k: v for k, v in out["checks"].items() if not (tiny and k == "loss_fell")}
  failed = [f"check {k} failed" for k, v in required.items() if not v] + out.get("errors", [])
  out.update(status="failed" if failed else "ok", seconds=time.perf_counter() - t)
  if failed:
    out["error"] = "; ".join(failed)
  clock.log(name, f"{out['status']} in {out['seconds']:.1f} s" +
            (f" ({out['error']})" if failed else ""))
  return out


# ----------------------------------------------------------------------------------------
# Report.


def fmt(x, spec: str = ".3g", none: str = "n/a") -> str:
  return none if x is None else format(x, spec)


def markdown(sections: dict) -> str:
  """The short table: one row per section."""
  lines = ["| section | model | dtype | batch | compile s | ms/step | training | MFU (target) "
           "| loss first -> last | sampling | status |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, s in sections.items():
    if "train" not in s:
      lines.append(f"| {name} | | | | | | | | | | {s['status']}: {s.get('error', '')[:80]} |")
      continue
    tr, smp = s["train"], s.get("sample")
    rate = (f"{tr['tokens_per_s']:,.0f} tok/s" if "tokens_per_s" in tr
            else f"{tr['examples_per_s']:,.1f} {tr['unit']}/s")
    mfu = "n/a" if tr["mfu"] is None else f"{100 * tr['mfu']:.1f}%"
    if s.get("target_mfu"):
      mfu += f" (>= {100 * s['target_mfu']:.0f}%)"
    sampling = ("" if smp is None else f"{smp['tokens_per_s']:,.0f} tok/s decoding"
                if "tokens_per_s" in smp else f"{smp['images_per_s']:,.1f} img/s Heun")
    lines.append(f"| {name} | {s['model']} | {tr['dtype']} | {tr['batch']} | "
                 f"{tr['compile_s']:.0f} | {1e3 * tr['step_s']:.1f} | {rate} | {mfu} | "
                 f"{tr['loss_first']:.3g} -> {tr['loss_last']:.3g} | {sampling} | "
                 f"{s['status']}{': ' + s['error'][:60] if s.get('error') else ''} |")
  return "\n".join(lines)


def headline(sections: dict) -> str:
  parts = []
  for name, s in sections.items():
    mfu = s.get("train", {}).get("mfu")
    target = s.get("target_mfu")
    figure = f" MFU {100 * mfu:.1f}%" if mfu is not None else ""
    if mfu is not None and target:
      figure += f" ({harness.verdict(mfu >= target)})"
    parts.append(f"{name} {s['status']}{figure}")
  return "; ".join(parts)


def selected(only: str, ap) -> list[str]:
  """The sections ``--only`` names (aliases expanded), in `SECTIONS`' order."""
  names = set()
  for word in filter(None, (w.strip() for w in only.split(","))):
    if word not in SECTIONS and word not in ALIASES:
      ap.error(f"--only: unknown section {word!r}; choose from "
               f"{', '.join(SECTIONS + tuple(ALIASES))}")
    names.update(ALIASES.get(word, (word,)))
  return [s for s in SECTIONS if s in names]


def main(argv=None) -> int:
  ap = harness.parser(__doc__)
  ap.set_defaults(json="accelerator_check.json")
  ap.add_argument("--tiny", action="store_true",
                  help="the same code paths at tiny shapes (CPU, well under a minute)")
  ap.add_argument("--only", default=",".join(SECTIONS),
                  help=f"comma-separated sections: {', '.join(SECTIONS)}; ddpmpp = "
                  "cifar10,ffhq64")
  ap.add_argument("--peak_tflops", type=float, default=None,
                  help="peak TFLOP/s of one device for MFU (default: by device kind)")
  ap.add_argument("--unet_dtype", choices=training.DTYPES, default="bfloat16",
                  help="the UNets' training dtype (model.dtype: mixed precision)")
  ap.add_argument("--conv_impl", choices=("auto", "xla", "matmul"), default="auto",
                  help="the UNets' convolutions (auto: xla on GPU, matmul on CPU)")
  ap.add_argument("--repeats", type=int, default=2, help="timed calls of each sampler")
  ap.add_argument("--time_budget_s", type=float, default=420.0,
                  help="after this many seconds training stops after its current segment "
                  "and sections not started are skipped (the JSON is written either way)")
  ap.add_argument("--compilation_cache", default="", metavar="DIR",
                  help="JAX's persistent compilation cache here (a second run skips most "
                  "compilation)")
  args = harness.parse(ap, argv, ("peak_tflops", "repeats", "time_budget_s",
                                  "compilation_cache"))
  names = selected(args.only, ap)
  clock = Clock()
  rng.configure_jax()  # the settings every run uses (launchers, tests)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  env = harness.environment_line()
  devices = jax.local_devices()
  # All local devices on the fsdp axis: states sharded over them, batches split over them.
  mesh = mesh_lib.make_mesh(1, len(devices))
  peak, peak_source = peak_tflops(devices[0].device_kind, args.peak_tflops)
  clock.log("setup", f"{len(devices)}x {devices[0].device_kind}, mesh data 1 x fsdp "
            f"{len(devices)}; peak {fmt(peak)} TFLOP/s per device ({peak_source})")
  sizes = TINY if args.tiny else FULL
  sections: dict = {}

  def record() -> None:
    figures = {"sections": sections, "devices": len(devices),
               "device_kind": devices[0].device_kind, "mesh": dict(mesh.shape),
               "peak_tflops_per_device": peak, "peak_source": peak_source,
               "target_mfu": TARGET_MFU, "tiny": args.tiny, "wall_s": clock.elapsed()}
    harness.write(args, "accelerator_check", TARGET, headline(sections), figures, env)

  for name in names:
    sections[name] = run_section(name, sizes[name], mesh, peak, clock, args.time_budget_s,
                                 args, args.tiny)
    record()  # after every section: a run killed later keeps these
  print()
  print(markdown(sections))
  print(f"\npeak: {fmt(peak)} TFLOP/s per device ({peak_source}); targets on one H100: MFU "
        f">= 40% LM, >= 35% DDPM++; wall {clock.elapsed():.0f} s", flush=True)
  bad = [n for n, s in sections.items() if s["status"] != "ok"]
  if bad:
    print(f"FAILED sections: {', '.join(bad)}", flush=True)
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
