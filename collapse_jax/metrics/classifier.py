"""A small CNN classifier trained once on the real training images.

Its penultimate layer (128-d) is the offline feature space for Frechet distance and
precision/recall, for machines without Inception weights. It is trained deterministically
from the run's seed and kept in the workdir, so every generation (and a resumed run) is
measured in the same space, and in a shared cache keyed by its data and settings
(`shared_path`), so the runs of one comparison train it once.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shutil
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from collapse_jax.nets.layers import Conv
from collapse_jax.workdir import write_atomically

FEATURE_DIM = 128
# images [n, h, w, c] -> (features [n, 128], logits [n, classes])
ClassifierFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


class Classifier(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[b, h, w, c]`` -> (features ``[b, 128]``, logits ``[b, num_classes]``)."""
    h = nn.silu(Conv(32)(x))
    h = nn.silu(Conv(64, strides=2)(h))
    h = nn.silu(Conv(64, strides=2)(h))
    features = nn.silu(nn.Dense(FEATURE_DIM)(h.mean(axis=(1, 2))))
    return features, nn.Dense(self.num_classes)(features)


# Parameters are arguments, not constants closed over: XLA folds constant weights through the
# convolutions' transforms with its interpreter at every compile.
@functools.partial(jax.jit, static_argnums=0)
def _apply(model: Classifier, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return model.apply({"params": params}, x)


def train_classifier(images: np.ndarray, labels: np.ndarray, seed: int, *, steps: int = 1500,
                     batch_size: int = 128) -> tuple[dict, float]:
  """Adam on cross-entropy; returns (params, training accuracy)."""
  model = Classifier(int(labels.max()) + 1)
  key = jax.random.PRNGKey(seed)
  params = jax.jit(model.init)(key, images[:1])["params"]
  opt = optax.adam(1e-3)
  x, y = jnp.asarray(images), jnp.asarray(labels)

  def step(carry, k):
    p, o = carry
    idx = jax.random.randint(k, (batch_size,), 0, x.shape[0])
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, x[idx])[1], y[idx]).mean()
    updates, o = opt.update(jax.grad(loss)(p), o, p)
    return (optax.apply_updates(p, updates), o), None

  (params, _), _ = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(
      (params, opt.init(params)), jax.random.split(jax.random.fold_in(key, 1), steps))
  predicted = np.concatenate([np.asarray(_apply(model, params, x[i:i + 1000])[1]).argmax(1)
                              for i in range(0, len(x), 1000)])
  return params, float(np.mean(predicted == labels))


def shared_path(images: np.ndarray, labels: np.ndarray, seed: int, steps: int
                ) -> pathlib.Path:
  """Where the classifier of exactly these images, labels, seed and steps is kept across runs:
  ``$COLLAPSE_JAX_CLASSIFIERS``, else ``~/.cache/collapse_jax/classifiers``. The key also
  hashes this module's source and what training's last bits depend on (the jax and jaxlib
  versions, the backend, XLA_FLAGS), so an entry is only read where training would give
  it bitwise."""
  key = hashlib.sha256(pathlib.Path(__file__).read_bytes())
  for array in (images, labels):
    key.update(np.ascontiguousarray(array).tobytes())
  key.update(f"{images.shape},{images.dtype},{seed},{steps},{jax.__version__},"
             f"{jax.lib.__version__},{jax.default_backend()},"
             f"{os.environ.get('XLA_FLAGS', '')}".encode())
  root = os.environ.get("COLLAPSE_JAX_CLASSIFIERS",
                        str(pathlib.Path.home() / ".cache" / "collapse_jax" / "classifiers"))
  return pathlib.Path(root) / f"{key.hexdigest()[:32]}.npz"


def _copy(source: pathlib.Path, target: pathlib.Path) -> None:
  with open(source, "rb") as f:
    write_atomically(target, lambda out: shutil.copyfileobj(f, out))


def load_or_train(path: pathlib.Path | None, images: np.ndarray, labels: np.ndarray, seed: int,
                  steps: int) -> tuple[ClassifierFn, float]:
  """The classifier kept at ``path`` (.npz): read from there, else copied from the shared
  cache, else trained and saved to both (a shared cache that cannot be written is skipped);
  ``path=None``: the shared cache alone."""
  num_classes = int(labels.max()) + 1
  shared = shared_path(images, labels, seed, steps)
  path = path or shared
  if not path.exists() and shared.exists():
    _copy(shared, path)
  if path.exists():
    stored = dict(np.load(path))
    accuracy = float(stored.pop("__accuracy__"))
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in stored.items()})
  else:
    params, accuracy = train_classifier(images, labels, seed, steps=steps)
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    write_atomically(path, lambda f: np.savez(f, __accuracy__=accuracy, **flat))
    try:
      if path != shared:
        _copy(path, shared)
    except OSError:  # a read-only or full home: the run keeps its own copy
      pass
  return functools.partial(_apply, Classifier(num_classes), params), accuracy


def labelled_train(source) -> tuple[np.ndarray | None, np.ndarray | None]:
  """The source's real labelled training images and labels, or (None, None) for a source
  without them (`labelled_train()` is optional in the Source contract)."""
  return getattr(source, "labelled_train", lambda: (None, None))()


def batched_features(fn, images: np.ndarray, batch: int = 500) -> np.ndarray:
  """``fn`` of ``images`` in batches padded to one shape (one compiled program): ``batch``
  rows, or fewer for fewer images (rounded up to 8), so a small set is not padded 8-fold."""
  n = len(images)
  batch = min(batch, -(-n // 8) * 8)
  padded = np.concatenate([images, np.zeros((-n % batch,) + images.shape[1:], images.dtype)])
  return np.concatenate([np.asarray(fn(padded[i:i + batch]))
                         for i in range(0, len(padded), batch)])[:n]

