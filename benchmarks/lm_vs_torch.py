"""GPT-2 9M on CPU: our Flax transformer vs Hugging Face `transformers` (PyTorch), one run.

Builds the same GPT-2 (vocab 8,000, d 256, 8 layers, 4 heads, 2,048 positions, tied
embeddings, tanh GELU, no dropout) on both sides, copies our weights into the PyTorch model
and checks that the logits agree to 1e-5, then times, interleaved round by round so that
load from other processes hits both alike:
  training   one AdamW step (forward, backward, update) on ``--train-batch`` full rows of
             ``--train-len`` tokens; tokens/s
  sampling   ``--sample-batch`` stories of ``--new-tokens`` new tokens from BOS, ancestral
             sampling at temperature 1, KV cache on both sides (ours: `TransformerLM.generate`
             in jit; theirs: ``generate(do_sample=True, top_k=0, use_cache=True)`` with the
             EOS stop disabled so both draw every token); tokens/s
and prints the medians and the median of the per-round ratios (ours / theirs). PyTorch
runs on ``--threads`` threads (default 2).

  python benchmarks/lm_vs_torch.py                       # ~5 minutes on 2 cores
  python benchmarks/lm_vs_torch.py --rounds 2 --new-tokens 64   # quicker
"""
import argparse
import statistics
import time

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


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--train-batch", type=int, default=8)
  ap.add_argument("--train-len", type=int, default=256)
  ap.add_argument("--sample-batch", type=int, default=64)
  ap.add_argument("--new-tokens", type=int, default=256)
  args = ap.parse_args()
  torch.set_num_threads(args.threads)

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

  # Training step: AdamW, token-weighted CE on full rows (no padding).
  budget = training.Budget(batch_size=args.train_batch, steps=1, learning_rate=3e-4,
                           optimizer_name="adamw", weight_decay=0.1, b2=0.95)
  opt = budget.optimizer()
  batch = jnp.asarray(np.random.default_rng(1).integers(4, 8000, (args.train_batch,
                                                                  args.train_len + 1)))

  @jax.jit
  def jax_step(p, o, x):
    def loss(p):
      s, w = token_cross_entropy(net.apply({"params": p}, x[:, :-1])[0], x)
      return s / w
    g = jax.grad(loss)(p)
    u, o = opt.update(g, o, p)
    return optax.apply_updates(p, u), o

  jp, jo = params, opt.init(params)
  hf.train()
  topt = torch.optim.AdamW(hf.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
  tb = torch.from_numpy(np.asarray(batch, np.int64))

  def torch_step():
    out = hf(tb[:, :-1], labels=tb[:, :-1].clone())  # HF shifts labels itself
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    topt.step()
    topt.zero_grad()

  # Sampling.
  lm = TransformerLM(net_config=config, field="tokens", context=args.new_tokens + 1,
                     budget=budget, temperature=1.0, prompt="bos",
                     sample_batch_size=args.sample_batch)
  jax_sample = jax.jit(lm.generate, static_argnums=3)
  bos = torch.full((args.sample_batch, 1), tok.BOS)

  def torch_sample():
    hf.eval()
    with torch.no_grad():
      return hf.generate(bos, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                         use_cache=True, pad_token_id=tok.PAD)

  train_tokens = args.train_batch * args.train_len
  sample_tokens = args.sample_batch * args.new_tokens
  times = {k: [] for k in ("jax_train", "torch_train", "jax_sample", "torch_sample")}

  def timed(name, fn):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    times[name].append(time.perf_counter() - t0)
    return out

  # Warm-up (compilation, allocator) then interleaved rounds.
  jp, jo = jax.block_until_ready(jax_step(jp, jo, batch))
  torch_step()
  jax.block_until_ready(jax_sample(params, None, jax.random.PRNGKey(0), args.sample_batch))
  out = torch_sample()
  assert out.shape == (args.sample_batch, args.new_tokens + 1), out.shape
  for r in range(args.rounds):
    jp, jo = timed("jax_train", lambda: jax_step(jp, jo, batch))
    timed("torch_train", torch_step)
    timed("jax_sample", lambda: jax_sample(params, None, jax.random.PRNGKey(r + 1),
                                           args.sample_batch))
    timed("torch_sample", torch_sample)
    print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
          flush=True)
  rows = jax_sample(params, None, jax.random.PRNGKey(9), args.sample_batch)
  drawn = int(np.sum(np.asarray(rows)[:, 1:] != tok.PAD))
  print(f"our sampler drew {drawn} of {sample_tokens} tokens (stops only when all rows hit EOS)")

  med = {k: statistics.median(v) for k, v in times.items()}
  print(f"threads={args.threads} rounds={args.rounds} train {args.train_batch}x{args.train_len} "
        f"sample {args.sample_batch}x{args.new_tokens}")
  for what, n in (("train", train_tokens), ("sample", sample_tokens)):
    ratios = [t / j for j, t in zip(times[f"jax_{what}"], times[f"torch_{what}"])]
    print(f"{what:6s} jax {n / med[f'jax_{what}']:9.0f} tok/s | torch "
          f"{n / med[f'torch_{what}']:9.0f} tok/s | ratio jax/torch median "
          f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
  main()
