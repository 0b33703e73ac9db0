"""CPU training-step time of our UNet and VAE nets: JAX (matmul / XLA conv) vs PyTorch.

Builds the same networks in PyTorch (a layer-for-layer mirror of collapse_jax.nets.unet
and nets.conv_vae, checked by copying the JAX weights over and comparing outputs), then times
one training step (forward + backward + Adam) per framework. Steps of all variants are
interleaved round by round so that load from other processes hits them alike; the table
gives the median (and min) over rounds after warm-up, and the median of the per-round
torch/jax ratios (benchmarks/harness.py: its rounds, flags, environment and ``--json``
record; ``--repeats`` is ``--rounds``, ``--threads N`` gives both frameworks N threads).

Needs torch (`pip install torch==2.13.0`, the CPU build); installs nothing itself.

`--tuned-malloc` re-runs the benchmark with glibc malloc settings that keep freed memory
for reuse. XLA:CPU allocates each step's temporaries (~0.9 GB for the default UNet) afresh;
glibc serves that from new mmap()s whose ~200k page faults cost the JAX step ~0.5-1 s here.

  python benchmarks/conv_vs_torch.py                   # default config, ~2-3 minutes
  python benchmarks/conv_vs_torch.py --repeats 5 --unet-batch 8   # quicker
"""

import collections
import math
import re
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

import harness  # benchmarks/, the script's directory
from collapse_jax.nets.unet import UNet
from collapse_jax.nets.conv_vae import Decoder, Encoder


# ----------------------------------------------------------------------------------------
# PyTorch mirror. Attribute names equal the Flax auto-names (Conv_0, GroupNorm_1, ...) so
# `load_flax_params` can copy a Flax param tree over by path.


class TorchConv(torch.nn.Conv2d):
  """3x3 / 1x1 conv with XLA's 'SAME' padding (stride 2 pads the end: pad 0/1 for even)."""

  def __init__(self, cin, cout, kernel_size=3, stride=1):
    super().__init__(cin, cout, kernel_size, stride=stride, padding=0)

  def forward(self, x):
    k, s = self.kernel_size[0], self.stride[0]
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad wants last dim first
      total = max((math.ceil(size / s) - 1) * s + k - size, 0)
      pads += [total // 2, total - total // 2]
    return super().forward(F.pad(x, pads))


def torch_group_norm(channels):
  return torch.nn.GroupNorm(max(1, min(32, channels // 4)), channels, eps=1e-6)


def torch_timestep_embedding(t, dim, max_period=10_000.0):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t[:, None] * freqs[None, :]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TorchResBlock(torch.nn.Module):

  def __init__(self, cin, cout, temb_dim, dropout):
    super().__init__()
    self.GroupNorm_0 = torch_group_norm(cin)
    self.Conv_0 = TorchConv(cin, cout)
    self.Dense_0 = torch.nn.Linear(temb_dim, cout)
    self.GroupNorm_1 = torch_group_norm(cout)
    self.dropout = torch.nn.Dropout(dropout)
    self.Conv_1 = TorchConv(cout, cout)
    self.Conv_2 = TorchConv(cin, cout, kernel_size=1) if cin != cout else None

  def forward(self, x, temb):
    h = self.Conv_0(F.silu(self.GroupNorm_0(x)))
    h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
    h = self.Conv_1(self.dropout(F.silu(self.GroupNorm_1(h))))
    if self.Conv_2 is not None:
      x = self.Conv_2(x)
    return (x + h) / math.sqrt(2)


class TorchAttnBlock(torch.nn.Module):

  def __init__(self, c):
    super().__init__()
    self.GroupNorm_0 = torch_group_norm(c)
    self.Dense_0 = torch.nn.Linear(c, 3 * c)
    self.Dense_1 = torch.nn.Linear(c, c)

  def forward(self, x):
    b, c, height, width = x.shape
    h = self.GroupNorm_0(x).reshape(b, c, height * width).transpose(1, 2)
    q, k, v = self.Dense_0(h).chunk(3, dim=-1)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
    h = self.Dense_1(weights @ v).transpose(1, 2).reshape(b, c, height, width)
    return (x + h) / math.sqrt(2)


class TorchUNet(torch.nn.Module):
  """Mirror of collapse_jax.nets.unet.UNet; the Flax call order fixes the names."""

  def __init__(self, in_channels, size, base_channels, channel_mult, num_res_blocks,
               attn_resolutions, dropout):
    super().__init__()
    self.base_channels = base_channels
    counts = {}

    def add(kind, module):
      name = f"{kind}_{counts.get(kind, 0)}"
      counts[kind] = counts.get(kind, 0) + 1
      self.add_module(name, module)
      return name

    temb_dim = 4 * base_channels
    add("Dense", torch.nn.Linear(base_channels, temb_dim))
    add("Dense", torch.nn.Linear(temb_dim, temb_dim))
    add("Conv", TorchConv(in_channels, base_channels))
    # ops: (kind, module name); the forward pass interprets them in Flax's order.
    self.ops = []
    ch, res = base_channels, size
    skips = [(ch, res)]

    def res_block(cin, level):
      cout = base_channels * channel_mult[level]
      self.ops.append(("res", add("ResBlock", TorchResBlock(cin, cout, temb_dim, dropout))))
      if res in attn_resolutions:
        self.ops.append(("attn", add("AttnBlock", TorchAttnBlock(cout))))
      return cout

    for level in range(len(channel_mult)):
      for _ in range(num_res_blocks):
        ch = res_block(ch, level)
        self.ops.append(("push", None))
        skips.append((ch, res))
      if level != len(channel_mult) - 1:
        self.ops.append(("down", add("Conv", TorchConv(ch, ch, stride=2))))
        res = math.ceil(res / 2)
        skips.append((ch, res))
    self.ops.append(("res", add("ResBlock", TorchResBlock(ch, ch, temb_dim, dropout))))
    self.ops.append(("attn", add("AttnBlock", TorchAttnBlock(ch))))
    self.ops.append(("res", add("ResBlock", TorchResBlock(ch, ch, temb_dim, dropout))))
    for level in reversed(range(len(channel_mult))):
      for _ in range(num_res_blocks + 1):
        self.ops.append(("pop", None))
        ch = res_block(ch + skips.pop()[0], level)
      if level != 0:
        res = skips[-1][1]
        self.ops.append(("up", add("Conv", TorchConv(ch, ch))))
    add("GroupNorm", torch_group_norm(ch))
    self.out_name = add("Conv", TorchConv(ch, in_channels))
    self.gn_name = "GroupNorm_0"

  def forward(self, x, t):
    temb = torch_timestep_embedding(t, self.base_channels)
    temb = self.Dense_1(F.silu(self.Dense_0(temb)))
    h = self.Conv_0(x)
    skips = [h]
    for kind, name in self.ops:
      if kind == "res":
        h = getattr(self, name)(h, temb)
      elif kind == "attn":
        h = getattr(self, name)(h)
      elif kind == "push":
        skips.append(h)
      elif kind == "down":
        h = getattr(self, name)(h)
        skips.append(h)
      elif kind == "pop":
        h = torch.cat([h, skips.pop()], dim=1)
      elif kind == "up":
        size = skips[-1].shape[2:]
        h = F.interpolate(h, scale_factor=2, mode="nearest")[:, :, :size[0], :size[1]]
        h = getattr(self, name)(h)
    h = F.silu(getattr(self, self.gn_name)(h))
    return getattr(self, self.out_name)(h)


class TorchEncoder(torch.nn.Module):

  def __init__(self, in_shape, latent_dim, channels):
    super().__init__()
    height, width, cin = in_shape
    self.convs = [TorchConv(cin, channels[0])]
    ch = channels[0]
    for c in channels:
      self.convs.append(TorchConv(ch, c, stride=2))
      ch = c
      height, width = math.ceil(height / 2), math.ceil(width / 2)
    for i, conv in enumerate(self.convs):
      self.add_module(f"Conv_{i}", conv)
    self.Dense_0 = torch.nn.Linear(height * width * ch, 2 * latent_dim)

  def forward(self, x):
    h = x
    for conv in self.convs:
      h = F.silu(conv(h))
    # Flax flattens NHWC: match its order so the copied Dense weights line up.
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
    return self.Dense_0(h).chunk(2, dim=-1)


class TorchDecoder(torch.nn.Module):

  def __init__(self, latent_dim, out_shape, channels):
    super().__init__()
    height, width, cout = out_shape
    self.sizes = [(height, width)]
    for _ in channels:
      self.sizes.append((math.ceil(self.sizes[-1][0] / 2), math.ceil(self.sizes[-1][1] / 2)))
    self.channels = channels
    bh, bw = self.sizes[-1]
    self.Dense_0 = torch.nn.Linear(latent_dim, bh * bw * channels[-1])
    self.convs = []
    ch = channels[-1]
    for level in reversed(range(len(channels))):
      self.convs.append(TorchConv(ch, channels[level]))
      ch = channels[level]
    self.convs.append(TorchConv(ch, cout))
    for i, conv in enumerate(self.convs):
      self.add_module(f"Conv_{i}", conv)

  def forward(self, z):
    bh, bw = self.sizes[-1]
    h = F.silu(self.Dense_0(z)).reshape(z.shape[0], bh, bw, -1).permute(0, 3, 1, 2)
    for conv, level in zip(self.convs, reversed(range(len(self.channels)))):
      size = self.sizes[level]
      h = F.interpolate(h, scale_factor=2, mode="nearest")[:, :, :size[0], :size[1]]
      h = F.silu(conv(h))
    return self.convs[-1](h)


def load_flax_params(module: torch.nn.Module, params) -> None:
  """Copies a Flax param tree into the mirror, by attribute path."""
  for path, value in jax.tree_util.tree_leaves_with_path(params):
    names = [p.key for p in path]
    target = module
    for name in names[:-1]:
      target = getattr(target, name)
    value = torch.from_numpy(np.array(value))
    leaf = names[-1]
    if isinstance(target, torch.nn.Conv2d) and leaf == "kernel":
      value = value.permute(3, 2, 0, 1)  # HWIO -> OIHW
    elif isinstance(target, torch.nn.Linear) and leaf == "kernel":
      value = value.T
    attr = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    with torch.no_grad():
      getattr(target, attr).copy_(value)


# ----------------------------------------------------------------------------------------
# Training steps (same losses in both frameworks).


def abar(t, lib):
  """Cosine schedule's signal fraction at DDPM step t in [0, 1000)."""
  return lib.cos(0.5 * math.pi * t / 1000.0) ** 2


def jax_unet_step(model, optimizer):
  def loss_fn(params, x0, key):
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (x0.shape[0],), maxval=1000.0)
    eps = jax.random.normal(k_eps, x0.shape)
    a = abar(t, jnp)[:, None, None, None]
    pred = model.apply(params, jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * eps, t, train=True,
                       rngs={"dropout": k_drop})
    return jnp.mean((pred - eps) ** 2)

  def step(state, x0, key):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, x0, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return step


def torch_unet_step(model, optimizer):
  def step(x0):
    t = torch.rand(x0.shape[0]) * 1000.0
    eps = torch.randn_like(x0)
    a = abar(t, torch)[:, None, None, None]
    loss = torch.mean((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return step


def vae_loss_jax(enc, dec, params, x, key):
  mean, logvar = enc.apply(params["enc"], x)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
  logits = dec.apply(params["dec"], z)
  rec = optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=(1, 2, 3))
  kl = 0.5 * (jnp.exp(logvar) + mean ** 2 - 1 - logvar).sum(axis=-1)
  return jnp.mean(rec + kl)


def jax_vae_step(enc, dec, optimizer):
  def step(state, x, key):
    params, opt_state = state
    loss, grads = jax.value_and_grad(lambda p: vae_loss_jax(enc, dec, p, x, key))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return step


def torch_vae_step(enc, dec, optimizer):
  def step(x):
    mean, logvar = enc(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * (torch.exp(logvar) + mean ** 2 - 1 - logvar).sum(dim=-1)
    loss = torch.mean(rec + kl)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return step


# ----------------------------------------------------------------------------------------
# Timing.


def randomized(params, key, scale=0.05):
  """Params with every leaf random, so zero-initialised layers take part in the check."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([scale * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


def in_loop(step, k):
  """``k`` training steps per call, in a ``fori_loop`` as collapse_jax trains
  (models/training.py). It matters on CPU: XLA:CPU's convolution gradients run far slower
  inside a while loop than in a lone jitted step (see collapse_jax/nets/layers.py)."""
  def many(state, data, key):
    body = lambda i, carry: step(carry[0], data, jax.random.fold_in(key, i))
    return jax.lax.fori_loop(0, k, body, (state, jnp.zeros(())))
  return jax.jit(many, donate_argnums=0)


def jax_runner(step, state, data, root):
  """Closure that runs one call of ``step`` on fresh state each time (state is donated)."""
  box = {"state": state, "i": 0}

  def run():
    box["state"], loss = step(box["state"], data, jax.random.fold_in(root, box["i"]))
    box["i"] += 1
    jax.block_until_ready(loss)

  def profile(top: int, loop_steps: int):
    """Traces one call and prints the `top` HLO ops by time per step, each with the JAX
    op_name (layer / primitive) it was lowered from."""
    hlo = step.lower(box["state"], data, root).compile().as_text()
    origin = dict(re.findall(r'%(\S+) = .*?op_name="([^"]+)"', hlo))
    ns = collections.Counter({k: t for k, t in harness.op_times(run).items() if k in origin})
    total = sum(ns.values()) / 1e6 / loop_steps
    print(f"top HLO ops, ms per step (all ops: {total:.1f} ms; ops overlap across threads):")
    for name, t in ns.most_common(top):
      op_name = re.sub(r"^jit\(\w+\)/while/body/(closed_call/)?", "", origin[name])
      print(f"{t / 1e6 / loop_steps:8.2f}  {name[:30]:30s} {op_name[:90]}")

  run.profile = profile
  return run


def torch_runner(step, data):
  def run():
    step(data).item()

  return run


def print_table(title, times, loop_steps) -> dict:
  """Per-step times: the JAX entries ran ``loop_steps`` steps per call; returns each JAX
  entry's `harness.compare` against torch.

  `torch/jax` is the median over rounds of each round's ratio: variants run interleaved
  within a round, so pairing them cancels the drift of a shared machine's speed.
  """
  figures = {name: harness.compare(times, name, "torch", loop_steps, 1)
             for name in times["wall"] if name != "torch"}
  print(f"\n{title}; JAX: {loop_steps} steps per call in a fori_loop")
  print(f"{'impl':<14}{'median ms':>11}{'min ms':>10}{'torch/jax':>11}")
  for name, ts in times["wall"].items():
    per_step = [t / (1 if name == "torch" else loop_steps) for t in ts]
    ratio = "" if name == "torch" else f"{figures[name]['ratio']:10.2f}x"
    print(f"{name:<14}{statistics.median(per_step) * 1e3:11.1f}{min(per_step) * 1e3:10.1f} "
          f"{ratio}")
  return figures


# One arena (XLA's worker threads would otherwise get per-thread arenas that mmap large
# blocks anyway), no mmap for large blocks, no trimming: freed temporaries are reused.
TUNED_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 32),
                    "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def parse_ints(text):
  return tuple(int(v) for v in text.split(",") if v)


TARGET = "a training step >= 1.0x PyTorch's speed (UNet and VAE)"


def main(argv=None):
  parser = harness.parser(__doc__, rounds=10, threads=2, isa=True, rounds_alias="--repeats")
  parser.add_argument("--unet-batch", type=int, default=32)
  parser.add_argument("--unet-size", type=int, default=32)
  parser.add_argument("--unet-channels", type=int, default=3)
  parser.add_argument("--base-channels", type=int, default=64)
  parser.add_argument("--channel-mult", type=parse_ints, default=(1, 2, 2))
  parser.add_argument("--num-res-blocks", type=int, default=1)
  parser.add_argument("--attn-resolutions", type=parse_ints, default=(16,))
  parser.add_argument("--dropout", type=float, default=0.1)
  parser.add_argument("--vae-batch", type=int, default=128)
  parser.add_argument("--vae-size", type=int, default=28)
  parser.add_argument("--vae-channels", type=int, default=1)
  parser.add_argument("--latent-dim", type=int, default=16)
  parser.add_argument("--vae-conv-channels", type=parse_ints, default=(32, 64))
  parser.add_argument("--impls", default="matmul,xla", help="JAX conv impls to time")
  parser.add_argument("--loop-steps", type=int, default=4,
                      help="JAX steps per call, run in a fori_loop as collapse_jax trains")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--skip", default="", help="comma list of 'unet', 'vae' to skip")
  parser.add_argument("--profile", type=int, default=0, metavar="N",
                      help="after timing, print each JAX step's N most expensive HLO ops")
  parser.add_argument("--tuned-malloc", action="store_true",
                      help="re-exec with TUNED_MALLOC_ENV (applies to both frameworks)")
  args = harness.parse(parser, argv, ("impls", "loop_steps", "warmup", "skip", "tuned_malloc"))
  # glibc reads TUNED_MALLOC_ENV at start-up only, hence the re-exec (in set_up).
  harness.set_up(args, torch, TUNED_MALLOC_ENV if args.tuned_malloc else None)
  torch.manual_seed(0)
  impls = [i for i in args.impls.split(",") if i]
  print(f"command: {args.command}; tuned malloc {args.tuned_malloc}")
  env = harness.environment_line(torch)
  figures = {}
  root = jax.random.PRNGKey(0)
  rng = np.random.default_rng(0)

  if "unet" not in args.skip:
    shape = (args.unet_size, args.unet_size, args.unet_channels)
    unet_kw = dict(base_channels=args.base_channels, channel_mult=args.channel_mult,
                   num_res_blocks=args.num_res_blocks, attn_resolutions=args.attn_resolutions,
                   dropout=args.dropout)
    tnet = TorchUNet(args.unet_channels, args.unet_size, **unet_kw)
    x0 = rng.uniform(-1, 1, (args.unet_batch,) + shape).astype(np.float32)
    steps = {}
    for impl in impls:
      model = UNet(**unet_kw, conv_impl=impl)
      params = jax.jit(model.init)(root, x0[:1], jnp.zeros((1,)))
      if impl == impls[0]:
        check = randomized(params, root)
        xs, ts = x0[:2], jnp.array([3.0, 700.0])
        load_flax_params(tnet, check["params"])
        tnet.eval()
        with torch.no_grad():
          ref = tnet(torch.from_numpy(xs).permute(0, 3, 1, 2), torch.from_numpy(np.array(ts)))
        tnet.train()
        err = np.abs(ref.permute(0, 2, 3, 1).numpy() - model.apply(check, xs, ts)).max()
        figures["unet_mirror_max_abs_diff"] = float(err)
        print(f"UNet mirror check: max |torch - jax| = {err:.2e} "
              f"({sum(p.numel() for p in tnet.parameters())} params)")
        # Both frameworks train from the same initial weights (tiny random weights would
        # put torch into denormal arithmetic, which is far slower).
        load_flax_params(tnet, params["params"])
      optimizer = optax.adam(2e-4)
      steps[impl] = jax_runner(in_loop(jax_unet_step(model, optimizer), args.loop_steps),
                               (params, optimizer.init(params)), jnp.asarray(x0), root)
    tstep = torch_unet_step(tnet, torch.optim.Adam(tnet.parameters(), lr=2e-4))
    steps["torch"] = torch_runner(tstep, torch.from_numpy(x0).permute(0, 3, 1, 2).contiguous())
    times = harness.rounds(steps, args.rounds, args.warmup)
    figures["unet"] = print_table(f"UNet train step: batch {args.unet_batch}, {shape}, "
                                  f"{unet_kw}", times, args.loop_steps)
    harness.load_note(times, args.threads)
    profile_jax_steps(steps, args)

  if "vae" not in args.skip:
    shape = (args.vae_size, args.vae_size, args.vae_channels)
    tenc = TorchEncoder(shape, args.latent_dim, args.vae_conv_channels)
    tdec = TorchDecoder(args.latent_dim, shape, args.vae_conv_channels)
    x = (rng.uniform(0, 1, (args.vae_batch,) + shape) > 0.5).astype(np.float32)
    steps = {}
    for impl in impls:
      enc = Encoder(args.latent_dim, args.vae_conv_channels, conv_impl=impl)
      dec = Decoder(args.latent_dim, shape, args.vae_conv_channels, conv_impl=impl)
      params = {"enc": jax.jit(enc.init)(root, x[:1]),
                "dec": jax.jit(dec.init)(root, jnp.zeros((1, args.latent_dim)))}
      if impl == impls[0]:
        check = randomized(params, root)
        load_flax_params(tenc, check["enc"]["params"])
        load_flax_params(tdec, check["dec"]["params"])
        with torch.no_grad():
          tmean, _ = tenc(torch.from_numpy(x[:2]).permute(0, 3, 1, 2))
          tout = tdec(tmean).permute(0, 2, 3, 1).numpy()
        jmean, _ = enc.apply(check["enc"], x[:2])
        err = np.abs(tout - dec.apply(check["dec"], jmean)).max()
        figures["vae_mirror_max_abs_diff"] = float(err)
        print(f"VAE mirror check: max |torch - jax| = {err:.2e}")
        load_flax_params(tenc, params["enc"]["params"])
        load_flax_params(tdec, params["dec"]["params"])
      optimizer = optax.adam(1e-3)
      steps[impl] = jax_runner(in_loop(jax_vae_step(enc, dec, optimizer), args.loop_steps),
                               (params, optimizer.init(params)), jnp.asarray(x), root)
    tparams = list(tenc.parameters()) + list(tdec.parameters())
    tstep = torch_vae_step(tenc, tdec, torch.optim.Adam(tparams, lr=1e-3))
    steps["torch"] = torch_runner(tstep, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    times = harness.rounds(steps, args.rounds, args.warmup)
    figures["vae"] = print_table(f"VAE train step: batch {args.vae_batch}, {shape}, latent "
                                 f"{args.latent_dim}, channels {args.vae_conv_channels}", times,
                                 args.loop_steps)
    harness.load_note(times, args.threads)
    profile_jax_steps(steps, args)

  headline = ", ".join(
      f"{net} {figs[impls[0]]['ratio']:.2f}x "
      f"({harness.verdict(figs[impls[0]]['ratio'] >= 1.0)})"
      for net, figs in (("UNet", figures.get("unet")), ("VAE", figures.get("vae"))) if figs)
  harness.write(args, "conv_vs_torch", TARGET, f"{headline} ({impls[0]})", figures, env)


def profile_jax_steps(steps, args):
  for name, run in steps.items():
    if args.profile and name != "torch":
      print(f"\n{name}: ", end="")
      run.profile(args.profile, args.loop_steps)


if __name__ == "__main__":
  main()
