"""GPT-2 9M on CPU: our Flax transformer vs Hugging Face `transformers` (PyTorch), one run.

Builds the same GPT-2 (vocab 8,000, d 256, 8 layers, 4 heads, 2,048 positions, tied
embeddings, tanh GELU, no dropout) on both sides, copies our weights into the PyTorch model
and checks that the logits agree to 1e-5, then times, interleaved round by round so that
load from other processes hits both alike:
  training   one AdamW step (forward, backward, clip, update) on ``--train-batch`` full rows
             of ``--train-len`` tokens, float32 on both sides; tokens/s
  sampling   ``--sample-batch`` stories of ``--new-tokens`` new tokens from BOS, ancestral
             sampling at temperature 1, KV cache on both sides (ours: `TransformerLM.generate`
             in jit; theirs: ``generate(do_sample=True, top_k=0, use_cache=True)`` with the
             EOS stop disabled so both draw every token); tokens/s
and prints the medians and the median of the per-round ratios (ours / theirs), by wall clock
(the figure) and by process CPU time (the work done, spin-waiting threads included): the
paired rounds, flags, environment and record of benchmarks/harness.py.

Other processes on the cores wreck the multi-threaded figures, torch's most: its OpenMP
threads wait at the end of every operator for a partner the scheduler has taken off the
core, and the time (wall and CPU) of its steps grows several-fold where XLA's grows by far
less (benchmarks/README.md has figures: the ratio then says nothing about either library).
The script prints the load average; above the core count only single-threaded figures on
one core (``taskset -c 0 ... --threads 1``: the two sides then share its time alike) are
comparable.

Fair by construction: both sides run ``--threads`` intra-op threads (torch.set_num_threads;
XLA:CPU's pool through NPROC, read when JAX starts), float32 everywhere (torch's float32
matmul precision "highest": no bf16/AMX), eager PyTorch as `transformers` runs it, our step
compiled once, both warmed up. JAX runs as a collapse_jax run does: glibc's allocator keeps
XLA's temporaries (`host_memory.reuse_host_temporaries`, which torch shares in this process)
and the step donates its parameters and optimizer state, as the training loop reuses them.

``--isa avx2`` caps both sides' kernels at AVX2 (the other kind of x86 CPU) on an AVX-512
host: torch fully (MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), XLA only
in the kernels it generates (--xla_cpu_max_isa): XLA's matrix products (YNNPACK, Eigen)
choose their instructions from CPUID and ignore the cap, so the capped ratio is an upper
bound of the ratio on a real AVX2 CPU (benchmarks/README.md).

Prints the environment (CPU model, its vector extensions, the versions of jax, torch and
transformers, caps, threads, load average); ``--json PATH`` writes it with the figures.

  python benchmarks/lm_vs_torch.py                       # ~5 minutes on 2 cores
  python benchmarks/lm_vs_torch.py --rounds 2 --new-tokens 64   # quicker
  python benchmarks/lm_vs_torch.py --isa avx2            # both capped at AVX2
  taskset -c 0 python benchmarks/lm_vs_torch.py --threads 1     # one core each, in turn
  python benchmarks/lm_vs_torch.py --rounds 1 --profile 20   # where our time goes
"""
import collections
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers.utils
import transformers.utils.import_utils

# The installed torchvision does not match torch 2.13 (its import fails); transformers
# imports it for image processing only, which a language model never needs.
transformers.utils.is_torchvision_available = lambda: False
transformers.utils.import_utils.is_torchvision_available = lambda: False
import transformers  # noqa: E402

import harness  # noqa: E402  (benchmarks/, the script's directory)
from collapse_jax.data import tokenizer as tok
from collapse_jax.models import training
from collapse_jax.models.transformer_lm import TransformerLM, token_cross_entropy
from collapse_jax.nets import transformer as tfm


def hf_gpt2(config: tfm.TransformerConfig) -> transformers.GPT2LMHeadModel:
  hf = transformers.GPT2Config(
      vocab_size=config.vocab_size, n_positions=config.max_len, n_embd=config.d_model,
      n_layer=config.num_layers, n_head=config.num_heads, n_inner=config.d_ff,
      activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
      layer_norm_epsilon=config.norm_eps, tie_word_embeddings=True, bos_token_id=tok.BOS,
      eos_token_id=tok.EOS, pad_token_id=tok.PAD)
  return transformers.GPT2LMHeadModel(hf).eval()


def copy_weights(model: transformers.GPT2LMHeadModel, params, num_layers: int) -> None:
  """Our params into the HF model (its Conv1D weights are [in, out], like Flax kernels)."""
  t = lambda x: torch.from_numpy(np.asarray(x, np.float32).copy())
  sd = {"transformer.wte.weight": params["embed"]["embedding"],
        "transformer.wpe.weight": params["pos_embed"]["embedding"],
        "transformer.ln_f.weight": params["norm_final"]["scale"],
        "transformer.ln_f.bias": params["norm_final"]["bias"]}
  for i in range(num_layers):
    p, h = params[f"block_{i}"], f"transformer.h.{i}."
    for ours, theirs in (("norm_attn", "ln_1"), ("norm_mlp", "ln_2")):
      sd[h + theirs + ".weight"], sd[h + theirs + ".bias"] = p[ours]["scale"], p[ours]["bias"]
    for ours, theirs in ((("attn", "qkv"), "attn.c_attn"), (("attn", "out"), "attn.c_proj"),
                         (("mlp", "up"), "mlp.c_fc"), (("mlp", "down"), "mlp.c_proj")):
      layer = p[ours[0]][ours[1]]
      sd[h + theirs + ".weight"], sd[h + theirs + ".bias"] = layer["kernel"], layer["bias"]
  missing = model.load_state_dict({k: t(v) for k, v in sd.items()}, strict=False)
  assert all(k == "lm_head.weight" for k in missing.missing_keys), missing  # tied to wte


def profile(fn, lowered, top: int, title: str) -> None:
  """Traces one call of ``fn`` and prints where XLA:CPU spent it: the share of each kind of
  op (YNNPACK fusions, other dots: Eigen, loop fusions, the rest) and the ``top`` ops, each
  with the JAX op_name it came from. Ops on different threads overlap, so shares are of op
  time, not of wall time."""
  hlo = lowered.compile().as_text()
  kinds, origin = {}, dict(re.findall(r'%(\S+) = .*?op_name="([^"]+)"', hlo))
  for name, shape, op, rest in re.findall(r"%(\S+) = (\S+) ([\w-]+)\((.*)", hlo):
    kinds[name] = (("YNNPACK" if "__ynn" in rest or "kind=kCustom" in rest else
                    "loop fusion" if "kind=kLoop" in rest else "other fusion")
                   if op == "fusion" else "dot (Eigen)" if op == "dot" else op), shape
  ns = collections.Counter({k: t for k, t in harness.op_times(fn).items() if k in kinds})
  by_kind = collections.Counter()
  for name, t in ns.items():
    by_kind[kinds[name][0]] += t
  total = sum(by_kind.values())
  print(f"\n{title}: {total / 1e6:.0f} ms of XLA ops; by kind: " + ", ".join(
      f"{k} {100 * t / total:.0f}%" for k, t in by_kind.most_common()))
  for name, t in ns.most_common(top):
    print(f"{100 * t / total:5.1f}%  {kinds[name][0]:12s} {kinds[name][1][:24]:24s} "
          f"{origin.get(name, name)[-70:]}")


TARGET = "training >= 1.0x and sampling >= 2x Hugging Face's tokens/s"


def main(argv=None):
  ap = harness.parser(__doc__, rounds=3, threads=2, malloc=True, isa=True)
  ap.add_argument("--train-batch", type=int, default=8)
  ap.add_argument("--train-len", type=int, default=256)
  ap.add_argument("--sample-batch", type=int, default=64)
  ap.add_argument("--new-tokens", type=int, default=256)
  ap.add_argument("--profile", type=int, default=0, metavar="N",
                  help="after timing, trace one JAX training step and one sampling call "
                  "and print their N most expensive XLA ops and the share of each kind")
  args = harness.parse(ap, argv)
  harness.set_up(args, torch)
  env = harness.environment_line(torch, ("transformers",))

  config = tfm.TransformerConfig.preset("gpt2-9m", 8000)
  net = tfm.Transformer(config)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  # Random (not zero) norms and biases, so the copy is checked on every tensor.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = tree.unflatten([x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  hf = hf_gpt2(config)
  copy_weights(hf, params, config.num_layers)
  tokens = np.random.default_rng(0).integers(4, 8000, (2, 64))
  ours = np.asarray(net.apply({"params": params}, jnp.asarray(tokens))[0])
  with torch.no_grad():
    theirs = hf(torch.from_numpy(tokens)).logits.numpy()
  err = float(np.max(np.abs(ours - theirs)))
  print(f"max |logit difference| = {err:.2e}", flush=True)
  assert err <= 1e-5, err

  # Training step: clip + AdamW, token-weighted CE on full rows (no padding), both sides.
  budget = training.Budget(batch_size=args.train_batch, steps=1, learning_rate=3e-4,
                           optimizer_name="adamw", weight_decay=0.1, b2=0.95)
  opt = budget.optimizer()
  batch = jnp.asarray(np.random.default_rng(1).integers(4, 8000, (args.train_batch,
                                                                  args.train_len + 1)))

  # Donated: the step writes the new parameters and moments over the old ones, as the
  # compiled training loop (`training.train`) does, instead of allocating 108 MB a step.
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def jax_step(p, o, x):
    def loss(p):
      s, w = token_cross_entropy(net.apply({"params": p}, x[:, :-1])[0], x)
      return s / w
    g = jax.grad(loss)(p)
    u, o = opt.update(g, o, p)
    return optax.apply_updates(p, u), o

  state = [jax.tree.map(jnp.copy, params), opt.init(params)]  # `params` stays for sampling
  hf.train()
  topt = torch.optim.AdamW(hf.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
  tb = torch.from_numpy(np.asarray(batch, np.int64))

  def jax_train():
    state[0], state[1] = jax_step(state[0], state[1], batch)
    return state

  def torch_train():
    out = hf(tb[:, :-1], labels=tb[:, :-1].clone())  # HF shifts labels itself
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    topt.step()
    topt.zero_grad()

  # Sampling.
  lm = TransformerLM(net_config=config, field="tokens", context=args.new_tokens + 1,
                     budget=budget, temperature=1.0, prompt="bos",
                     sample_batch_size=args.sample_batch)
  jax_generate = jax.jit(lm.generate, static_argnums=3)
  bos = torch.full((args.sample_batch, 1), tok.BOS)
  draws = [0]

  def jax_sample():
    draws[0] += 1
    return jax_generate(params, None, jax.random.PRNGKey(draws[0]), args.sample_batch)

  def torch_sample():
    hf.eval()
    with torch.no_grad():
      out = hf.generate(bos, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                        use_cache=True, pad_token_id=tok.PAD)
    hf.train()
    assert out.shape == (args.sample_batch, args.new_tokens + 1), out.shape
    return out

  # Warm-up (compilation, allocator, caches) then interleaved rounds.
  times = harness.rounds({"jax_train": jax_train, "torch_train": torch_train,
                          "jax_sample": jax_sample, "torch_sample": torch_sample}, args.rounds)
  rows = jax_generate(params, None, jax.random.PRNGKey(9), args.sample_batch)
  drawn = int(np.sum(np.asarray(rows)[:, 1:] != tok.PAD))
  work = {"train": args.train_batch * args.train_len,
          "sample": args.sample_batch * args.new_tokens}
  print(f"our sampler drew {drawn} of {work['sample']} tokens (stops only when all rows hit "
        f"EOS)")

  print(f"threads={args.threads} isa={args.isa} malloc={args.malloc} rounds={args.rounds} "
        f"train {args.train_batch}x{args.train_len} sample {args.sample_batch}x"
        f"{args.new_tokens}")
  figures = {what: harness.compare(times, f"jax_{what}", f"torch_{what}", n)
             for what, n in work.items()}
  for what, fig in figures.items():
    print(harness.report(what, fig, "tok"))
  harness.load_note(times, args.threads)
  if args.profile:
    profile(jax_train, jax_step.lower(state[0], state[1], batch), args.profile,
            "JAX training step")
    profile(jax_sample, jax_generate.lower(params, None, jax.random.PRNGKey(0),
                                           args.sample_batch), args.profile, "JAX sampling")
  print(f"environment: {harness.line(env)}")
  train, sample = figures["train"]["ratio"], figures["sample"]["ratio"]
  headline = (f"training {train:.2f}x ({harness.verdict(train >= 1.0)}), sampling "
              f"{sample:.2f}x ({harness.verdict(sample >= 2.0)})")
  harness.write(args, "lm_vs_torch", TARGET, headline,
                {**figures, "logit_max_abs_diff": err, "sampler_drew": drawn,
                 "load_average_per_round": times["load"]}, env)


if __name__ == "__main__":
  main()
