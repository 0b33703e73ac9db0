"""The FID Inception-v3 network (pytorch-fid's ``InceptionV3([3])``) in Flax, and its weights.

FID numbers are only comparable with published ones when they come from exactly the
network pytorch-fid uses: torchvision's Inception-v3 with the TensorFlow 2015-12-05
weights and four patched blocks (``FIDInceptionA/C/E_1/E_2``: average pools that ignore
padding, and a max pool in the last block). This module is that network up to the
2048-d pool3 features, with the same input handling (bilinear resize to 299x299 without
antialiasing). Module names mirror torchvision's attribute names, so converting a
pytorch-fid state dict is a rename plus a kernel transpose (``convert_state_dict``).

The weights cannot be downloaded at run time: ``tools/convert_inception_weights.py``
turns ``pt_inception-2015-12-05-6726825d.pth`` into an ``.npz`` that ``load_params``
reads, and ``FidFeatureExtractor.from_env`` finds it (explicit path or
``$COLLAPSE_JAX_INCEPTION_WEIGHTS``) or reports it unavailable. It never makes up
features.
"""
import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

WEIGHTS_ENV_VAR = "COLLAPSE_JAX_INCEPTION_WEIGHTS"
INPUT_SIZE = 299
FEATURE_DIM = 2048

Variables = Mapping[str, Any]

# Features feed a covariance whose square root FID takes, so keep full float32 even
# where the backend would default to TF32/bf16 convolutions.
_PRECISION = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """torchvision's ``BasicConv2d``: conv without bias, BatchNorm (eps 1e-3), ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=[(p, p) for p in self.padding], use_bias=False,
                precision=_PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TensorFlow's average pool, which the FID blocks patch in, ignores padded zeros.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def _convs(x: jax.Array, name: str, *layers) -> jax.Array:
  """``x`` through BasicConv2d layers ``<name>_1``, ``<name>_2``, ... in turn, each given as
  ``(features, kernel)`` or ``(features, kernel, 2)`` for stride 2. As everywhere in the
  Inception blocks, stride-1 layers pad to keep the size and stride-2 layers do not pad."""
  for i, (features, kernel, *stride) in enumerate(layers, start=1):
    s = stride[0] if stride else 1
    padding = (kernel[0] // 2, kernel[1] // 2) if s == 1 else (0, 0)
    x = BasicConv2d(features, kernel, strides=(s, s), padding=padding, name=f"{name}_{i}")(x)
  return x


class FIDInceptionA(nn.Module):
  """``pytorch_fid.inception.FIDInceptionA``: ``[n, h, w, c] -> [n, h, w, 224 + pool]``."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    branch5x5 = _convs(x, "branch5x5", (48, (1, 1)), (64, (5, 5)))
    branch3x3dbl = _convs(x, "branch3x3dbl", (64, (1, 1)), (96, (3, 3)), (96, (3, 3)))
    branch_pool = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """torchvision's ``InceptionB`` (unpatched): halves the spatial size, adds 480 channels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    branch3x3dbl = _convs(x, "branch3x3dbl", (64, (1, 1)), (96, (3, 3)), (96, (3, 3), 2))
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """``pytorch_fid.inception.FIDInceptionC``: ``[n, h, w, c] -> [n, h, w, 768]``."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    branch1x1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    branch7x7 = _convs(x, "branch7x7", (c7, (1, 1)), (c7, (1, 7)), (192, (7, 1)))
    branch7x7dbl = _convs(x, "branch7x7dbl", (c7, (1, 1)), (c7, (7, 1)), (c7, (1, 7)),
                          (c7, (7, 1)), (192, (1, 7)))
    branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """torchvision's ``InceptionD`` (unpatched): halves the spatial size, adds 512 channels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = _convs(x, "branch3x3", (192, (1, 1)), (320, (3, 3), 2))
    branch7x7x3 = _convs(x, "branch7x7x3", (192, (1, 1)), (192, (1, 7)), (192, (7, 1)),
                         (192, (3, 3), 2))
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride2(x)], axis=-1)


def _split_1x3_3x1(x: jax.Array, name: str) -> jax.Array:
  """InceptionE's 1x3 and 3x1 convolutions ``<name>a`` and ``<name>b`` of ``x``, side by side."""
  return jnp.concatenate([
      BasicConv2d(384, (1, 3), padding=(0, 1), name=f"{name}a")(x),
      BasicConv2d(384, (3, 1), padding=(1, 0), name=f"{name}b")(x),
  ], axis=-1)


class FIDInceptionE(nn.Module):
  """``pytorch_fid.inception.FIDInceptionE_1`` / ``_2``: ``[n, h, w, c] -> [n, h, w, 2048]``.

  ``max_pool`` selects ``E_2``, whose pool branch max-pools where every other Inception
  average-pools (a quirk of the TensorFlow graph that FID is defined by).
  """
  max_pool: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    branch3x3 = _split_1x3_3x1(_convs(x, "branch3x3", (384, (1, 1))), "branch3x3_2")
    branch3x3dbl = _split_1x3_3x1(_convs(x, "branch3x3dbl", (448, (1, 1)), (384, (3, 3))),
                                  "branch3x3dbl_3")
    pooled = (nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
              if self.max_pool else _avg_pool_3x3(x))
    branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's ``InceptionV3([3])`` after its input resize and rescale.

  Maps ``[n, 299, 299, 3]`` in [-1, 1] to the pool3 features ``[n, 2048]``.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = FIDInceptionA(32, name="Mixed_5b")(x)
    x = FIDInceptionA(64, name="Mixed_5c")(x)
    x = FIDInceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = FIDInceptionC(128, name="Mixed_6b")(x)
    x = FIDInceptionC(160, name="Mixed_6c")(x)
    x = FIDInceptionC(160, name="Mixed_6d")(x)
    x = FIDInceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = FIDInceptionE(max_pool=False, name="Mixed_7b")(x)
    x = FIDInceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """``[out_size, in_size]`` weights of torch's bilinear resize, ``align_corners=False``.

  Written out rather than using ``jax.image.resize``, which antialiases when shrinking;
  pytorch-fid's ``F.interpolate`` does not, and FID must see the same pixels. Source
  coordinates are rounded to float32 as torch's CPU kernel does (a float32 scale and one
  fused multiply-add), so the weights agree to the last bit rather than to ~1e-5.
  """
  f32 = np.float32
  scale = np.float64(f32(in_size) / f32(out_size))
  src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(f32)
  src = np.maximum(src, f32(0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = np.clip(src - lo.astype(f32), f32(0), f32(1))
  weights = np.zeros((out_size, in_size), f32)
  np.add.at(weights, (np.arange(out_size), lo), f32(1) - frac)
  np.add.at(weights, (np.arange(out_size), hi), frac)
  return weights


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Resizes ``[n, h, w, c]`` to ``[n, size, size, c]`` as torch's bilinear interpolate."""
  _, height, width, _ = images.shape
  # One axis at a time: a single three-operand einsum may form the [size, size, h, w]
  # outer product of the two weight matrices, which is gigabytes for large images.
  x = jnp.einsum("ih,nhwc->niwc", _bilinear_matrix(height, size), images,
                 precision=_PRECISION)
  return jnp.einsum("jw,niwc->nijc", _bilinear_matrix(width, size), x,
                    precision=_PRECISION)


@jax.jit
def inception_features(images: jax.Array, params: Variables) -> jax.Array:
  """FID pool3 features of ``[n, h, w, 3]`` images in [-1, 1]: ``[n, 2048]`` float32.

  pytorch-fid resizes [0, 1] images and then maps them to [-1, 1]; both steps are affine
  per pixel and resize weights sum to one, so resizing [-1, 1] images is the same.
  """
  chex.assert_rank(images, 4)
  chex.assert_axis_dimension(images, -1, 3)
  x = resize_bilinear(images.astype(jnp.float32))
  return FIDInceptionV3().apply(params, x)


@functools.cache  # tracing the whole network takes ~1 s; the answer never changes
def _expected_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
  """Shape of every Flax variable, keyed by ``(collection, *module path, name)``."""
  variables = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0),
                             jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
  return {k: v.shape for k, v in traverse_util.flatten_dict(variables).items()}


# torch BatchNorm2d names -> (Flax collection, Flax name).
_BN_NAMES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Flax variables (flat, ``"/"``-joined keys) from a pytorch-fid Inception state dict.

  ``state_dict`` maps torchvision ``Inception3`` names (``Mixed_5b.branch1x1.conv.weight``,
  as in ``pt_inception-2015-12-05-6726825d.pth``) to numpy arrays. The 1008-way ``fc``
  layer and BatchNorm step counters are dropped: pool3 features do not use them. Any other
  unknown name, or a missing variable, raises ``ValueError`` so a wrong checkpoint never
  converts silently.
  """
  flat = {}
  for name, value in state_dict.items():
    *module, layer, leaf = name.split(".")
    if (not module and layer == "fc") or leaf == "num_batches_tracked":
      continue
    value = np.asarray(value, dtype=np.float32)
    if layer == "conv" and leaf == "weight":
      # torch [out, in, kh, kw] -> Flax [kh, kw, in, out].
      flat[("params", *module, "conv", "kernel")] = value.transpose(2, 3, 1, 0)
    elif layer == "bn" and leaf in _BN_NAMES:
      collection, flax_name = _BN_NAMES[leaf]
      flat[(collection, *module, "bn", flax_name)] = value
    else:
      raise ValueError(f"Unexpected variable {name!r} in the Inception state dict.")
  _check_shapes(flat)
  return {"/".join(k): v for k, v in flat.items()}


def _check_shapes(flat: Mapping[tuple[str, ...], np.ndarray]) -> None:
  expected = _expected_shapes()
  missing = sorted("/".join(k) for k in expected.keys() - flat.keys())
  extra = sorted("/".join(k) for k in flat.keys() - expected.keys())
  if missing or extra:
    raise ValueError(f"Inception variables do not match the network: missing {missing[:5]}"
                     f" ({len(missing)}), unexpected {extra[:5]} ({len(extra)}).")
  for key, shape in expected.items():
    if flat[key].shape != shape:
      raise ValueError(f"Inception variable {'/'.join(key)} has shape {flat[key].shape},"
                       f" expected {shape}.")


def save_params(path: str | os.PathLike, flat_params: Mapping[str, np.ndarray]) -> None:
  """Writes ``convert_state_dict``'s output as the ``.npz`` that ``load_params`` reads."""
  np.savez(path, **flat_params)


def load_params(path: str | os.PathLike) -> dict[str, Any]:
  """Reads converted weights: ``{"params": ..., "batch_stats": ...}`` for ``FIDInceptionV3``.

  Raises ``ValueError`` if the file's variables do not match the network.
  """
  with np.load(path) as data:
    flat = {tuple(k.split("/")): data[k] for k in data.files}
  _check_shapes(flat)
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


class InceptionWeightsUnavailable(RuntimeError):
  """Raised when FID features are asked for but no converted weights were found."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FidFeatureExtractor:
  """FID Inception features, or the one-sentence reason they cannot be computed.

  Build it with ``from_env``; check ``available`` (and report ``reason``) before use.
  """
  params: Variables | None
  reason: str = ""

  @property
  def available(self) -> bool:
    return self.params is not None

  @classmethod
  def from_env(cls, path: str | os.PathLike | None = None) -> "FidFeatureExtractor":
    """Loads weights from ``path``, else from ``$COLLAPSE_JAX_INCEPTION_WEIGHTS``.

    A missing path or file gives an unavailable extractor; a file that exists but is not
    valid converted weights raises, since that is a setup error rather than an absence.
    """
    path = path if path is not None else os.environ.get(WEIGHTS_ENV_VAR)
    if not path:
      return cls(params=None, reason=(
          f"FID Inception weights unavailable: set {WEIGHTS_ENV_VAR} to an .npz made by"
          " tools/convert_inception_weights.py."))
    if not os.path.isfile(path):
      return cls(params=None,
                 reason=f"FID Inception weights unavailable: no file at {os.fspath(path)!r}.")
    return cls(params=load_params(path))

  def __call__(self, images: np.ndarray | jax.Array, *, batch_size: int = 200) -> np.ndarray:
    """``[n, h, w, 3]`` images in [-1, 1] -> ``[n, 2048]`` float32 features.

    Runs ``batch_size`` images at a time (the last batch padded so one compiled shape
    serves all) to bound memory at 299x299.
    """
    if self.params is None:
      raise InceptionWeightsUnavailable(self.reason)
    chex.assert_rank(images, 4)
    n = images.shape[0]
    if n == 0:
      return np.zeros((0, FEATURE_DIM), np.float32)
    batch_size = min(batch_size, n)
    images = np.asarray(images, dtype=np.float32)
    padded = np.concatenate([images, np.zeros((-n % batch_size, *images.shape[1:]), np.float32)])
    batches = [inception_features(padded[i:i + batch_size], self.params)
               for i in range(0, padded.shape[0], batch_size)]
    return np.concatenate([np.asarray(b) for b in batches])[:n]

