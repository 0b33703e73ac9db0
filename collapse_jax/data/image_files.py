"""Real image datasets read from their original on-disk formats, as host numpy arrays.

Every loader returns ``(images, labels)``: ``images`` float32 ``[n, height, width, channels]``
scaled to [-1, 1], ``labels`` int32 ``[n]`` or None where the dataset has none. Loading is
deterministic: files are read in a fixed order and every random choice comes from a seed.
Loaders read from a directory given by the caller; nothing is downloaded. The loop's image
Source around them is data/images.py.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import chex
import numpy as np
from PIL import Image

from collapse_jax.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DATASET_NAMES = ("digits", "mnist", "cifar10", "image_folder", "tfds")
# Datasets read by random access: each host of a multi-host run decodes only its own rows.
RANDOM_ACCESS = ("image_folder", "tfds")

Arrays = tuple[np.ndarray, np.ndarray | None]


# ----------------------------------------------------------------------------------------
# Shared helpers.


def _check_split(split: str, valid: tuple[str, ...]) -> None:
  if split not in valid:
    raise DataError(f"Unknown split {split!r}; valid splits are {', '.join(valid)}.")


def _require_dir(path: str | Path) -> Path:
  directory = Path(path)
  if directory.exists() and not directory.is_dir():
    raise DataError(f"Data directory {directory} is a file; give the folder that holds the "
                    "dataset's files.")
  if not directory.is_dir():
    raise DataError(f"Data directory {directory} does not exist.")
  return directory


def _require_file(path: Path) -> Path:
  if path.is_dir():
    raise DataError(f"Data file {path} is a folder, not a file.")
  if not path.is_file():
    raise DataError(f"Data file {path} does not exist.")
  if path.stat().st_size == 0:
    raise DataError(f"Data file {path} is empty.")
  return path


def check_positive(value: int | None, what: str) -> None:
  if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
    raise DataError(f"{what} must be a positive integer or None, got {value!r}.")


def _to_unit_range(pixels: np.ndarray, max_value: float) -> np.ndarray:
  """Maps pixels in [0, max_value] (any shape) to float32 in [-1, 1]."""
  images = pixels.astype(np.float32)
  # In place: for 60k MNIST images the temporaries of `x / a - 1` cost 20x the arithmetic.
  images /= max_value / 2
  images -= 1.0
  return images


def _resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """Resizes one image ``[height, width, channels]`` in [-1, 1] to a square ``resolution``.

  Non-square images are stretched, not cropped. Channels are resized as float ('F' mode)
  images so that no precision is lost to an intermediate uint8 rounding.
  """
  height, width, channels = image.shape
  if height == width == resolution:
    return image
  # BOX averages whole pixel blocks, exact for integer downsampling; LANCZOS otherwise.
  integer_downsample = height % resolution == 0 and width % resolution == 0
  resample = Image.Resampling.BOX if integer_downsample else Image.Resampling.LANCZOS
  resized = [
      np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]))
                 .resize((resolution, resolution), resample))
      for c in range(channels)
  ]
  # LANCZOS rings past the input range at sharp edges.
  return np.clip(np.stack(resized, axis=-1), -1.0, 1.0)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
  """``[n, h, w, c]`` -> ``[n, resolution, resolution, c]`` (see ``_resize`` for the filter)."""
  if images.shape[1:3] == (resolution, resolution):
    return images
  return np.stack([_resize(image, resolution) for image in images])


# ----------------------------------------------------------------------------------------
# Datasets.


def load_digits(split: str, seed: int = 0, test_fraction: float = 0.2) -> Arrays:
  """scikit-learn's embedded 8x8 digits: images ``[n, 8, 8, 1]``, labels ``[n]``.

  The 1,797 images are split by one permutation drawn from ``seed``: the first
  ``round(test_fraction * 1797)`` permuted rows are the test split, the rest train.
  """
  _check_split(split, ("train", "test"))
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
  pixels, labels = _sklearn_digits()
  n = len(labels)
  order = np.random.default_rng(seed).permutation(n)
  n_test = round(test_fraction * n)
  rows = order[:n_test] if split == "test" else order[n_test:]
  return _to_unit_range(pixels[rows, :, :, None], 16.0), labels[rows].astype(np.int32)


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits: float64 pixels ``[1797, 8, 8]`` in 0..16 and labels ``[1797]``,
  read from the CSV scikit-learn ships, as `sklearn.datasets.load_digits` reads it, without
  importing scikit-learn (whose import costs more than a smoke run's data); through
  `load_digits` where that file is not found."""
  spec = importlib.util.find_spec("sklearn")
  path = (Path(spec.submodule_search_locations[0]) / "datasets" / "data" /
          "digits.csv.gz") if spec and spec.submodule_search_locations else None
  if path is not None and path.is_file():
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  digits = datasets.load_digits()
  return digits.images, digits.target


# IDX magic numbers: two zero bytes, data type 0x08 (uint8), number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def _read_idx(path: Path, magic: int) -> np.ndarray:
  """Reads a gzipped IDX file of uint8 data; returns it with the dims of its header."""
  try:
    with gzip.open(_require_file(path), "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
    raise DataError(f"{path} is not a readable gzip file.") from e
  if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
    found = raw[:4].hex() if len(raw) >= 4 else "nothing"
    raise DataError(f"{path} is not an IDX file of the expected kind: magic number is "
                    f"{found}, expected {magic:08x}.")
  ndim = magic & 0xFF
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path} ends inside its IDX header.")
  dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  if len(raw) - header_size != math.prod(dims):
    raise DataError(f"{path} holds {len(raw) - header_size} data bytes but its header "
                    f"{dims} needs {math.prod(dims)}.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def load_mnist_idx(path: str | Path, split: str) -> Arrays:
  """MNIST from the original IDX gz files in ``path``: images ``[n, 28, 28, 1]``, labels ``[n]``.

  ``split`` "train" reads ``train-*-ubyte.gz`` (60,000 rows), "test" ``t10k-*`` (10,000).
  """
  _check_split(split, ("train", "test"))
  directory = _require_dir(path)
  prefix = "train" if split == "train" else "t10k"
  pixels = _read_idx(directory / f"{prefix}-images-idx3-ubyte.gz", _IDX_IMAGES_MAGIC)
  labels = _read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", _IDX_LABELS_MAGIC)
  if len(pixels) != len(labels):
    raise DataError(f"MNIST {split} has {len(pixels)} images but {len(labels)} labels.")
  return _to_unit_range(pixels[..., None], 255.0), labels.astype(np.int32)


def load_cifar10_batches(path: str | Path, split: str) -> Arrays:
  """CIFAR-10 python batches: images ``[n, 32, 32, 3]``, labels ``[n]``.

  ``path`` is the ``cifar-10-batches-py`` folder of the official archive, or the folder it
  was extracted into. "train" concatenates ``data_batch_1`` .. ``data_batch_5`` in order,
  "test" reads ``test_batch``. The files are pickles: load only trusted copies.
  """
  _check_split(split, ("train", "test"))
  directory = _require_dir(path)
  if (directory / "cifar-10-batches-py").is_dir():
    directory = directory / "cifar-10-batches-py"
  names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
  images, labels = [], []
  for name in names:
    file = _require_file(directory / name)
    with open(file, "rb") as f:
      # The batches were pickled by Python 2: their str keys and array buffers load as bytes.
      try:
        batch = pickle.load(f, encoding="bytes")
      except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"CIFAR-10 batch {file} is not a readable pickle.") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
      raise DataError(f"CIFAR-10 batch {file} has no b'data' and b'labels' entries.")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[b"labels"]):
      raise DataError(f"CIFAR-10 batch {file} has data of shape {data.shape} for "
                      f"{len(batch[b'labels'])} labels, expected [n, 3072].")
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(np.asarray(batch[b"labels"], dtype=np.int32))
  return _to_unit_range(np.concatenate(images), 255.0), np.concatenate(labels)


def image_files(path: str | Path, limit: int | None = None) -> list[Path]:
  """The PNG/JPEG files under ``path`` (recursively) in sorted relative-path order (FFHQ's
  ``00000/00000.png`` layout included), the first ``limit`` of them if given; none decoded."""
  check_positive(limit, "limit")
  directory = _require_dir(path)
  files = sorted((f for f in directory.rglob("*")
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                 key=lambda f: f.relative_to(directory).as_posix())
  if not files:
    raise DataError(f"Image folder {directory} holds no {'/'.join(IMAGE_SUFFIXES)} files.")
  return files[:limit]


def load_image_folder(path: str | Path, resolution: int, limit: int | None = None,
                      rows: tuple[int, int] | None = None) -> Arrays:
  """PNG/JPEG images under ``path`` (recursively): ``[n, resolution, resolution, 3]``, no labels.

  The files of `image_files` (the first ``limit``), converted to RGB and resized with
  ``_resize``; ``rows=(lo, hi)``: only files ``lo..hi`` of them, the only ones decoded.
  """
  if resolution is None:
    raise DataError("An image folder needs data.resolution, the square size of its images.")
  check_positive(resolution, "resolution")
  images = []
  for file in image_files(path, limit)[slice(*rows) if rows else slice(None)]:
    try:
      with Image.open(file) as image:
        pixels = np.asarray(image.convert("RGB"))
    except OSError as e:  # PIL.UnidentifiedImageError is an OSError.
      raise DataError(f"Cannot read image {file}.") from e
    images.append(_resize(_to_unit_range(pixels, 255.0), resolution))
  if not images:  # an empty range
    return np.zeros((0, resolution, resolution, 3), np.float32), None
  return np.stack(images), None


def tfds_source(name: str, split: str, data_dir: str | Path):
  """``tfds.data_source`` of a prepared split (random access; nothing decoded yet)."""
  directory = _require_dir(data_dir)
  import tensorflow_datasets as tfds  # Imported here: most runs never read TFDS.

  try:
    return tfds.data_source(name, split=split, data_dir=directory, download=False)
  except (ValueError, NotImplementedError, FileNotFoundError, AssertionError) as e:
    # TFDS' own messages can list every registered dataset; the cause stays chained.
    raise DataError(f"TFDS dataset {name!r} split {split!r} is not prepared in the "
                    f"array_record format under {directory}.") from e


def load_tfds(name: str, split: str, data_dir: str | Path, *, resolution: int | None = None,
              limit: int | None = None, rows: tuple[int, int] | None = None) -> Arrays:
  """A prepared TFDS dataset's 'image' (and 'label') features: ``[n, h, w, c]``, ``[n]`` or None.

  Reads through ``tfds.data_source``, so the dataset must have been prepared in the
  array_record format under ``data_dir``; TensorFlow is not needed. Nothing is downloaded.
  Records are read in the stored order, the first ``limit`` of them if given; ``rows=(lo,
  hi)``: only records ``lo..hi`` of those, the only ones decoded (random access: each host
  of a multi-host run reads its own). Datasets of varying image sizes need ``resolution``
  (see ``_resize``) so the images can be stacked.
  """
  check_positive(resolution, "resolution")
  check_positive(limit, "limit")
  source = tfds_source(name, split, data_dir)
  n = len(source) if limit is None else min(limit, len(source))
  lo, hi = (min(r, n) for r in (rows or (0, n)))
  # An empty range decodes record 0 all the same, for the image shape, and then drops it.
  records = [source[i] for i in (range(lo, hi) if hi > lo else range(min(n, 1)))]
  if not records or "image" not in records[0]:
    raise DataError(f"TFDS dataset {name!r} split {split!r} has no records with an 'image'.")
  images = [_to_unit_range(record["image"], 255.0) for record in records]
  if resolution is not None:
    images = [_resize(image, resolution) for image in images]
  if len({image.shape for image in images}) > 1:
    raise DataError(f"TFDS dataset {name!r} has images of several sizes; set a resolution.")
  labels = (np.array([record["label"] for record in records], dtype=np.int32)
            if "label" in records[0] else None)
  keep = slice(None) if hi > lo else slice(0, 0)
  return np.stack(images)[keep], None if labels is None else labels[keep]


def load_images(spec: Mapping[str, Any], split: str, rows: tuple[int, int] | None = None
                ) -> Arrays:
  """Loads the dataset ``spec`` describes: images ``[n, h, w, c]`` in [-1, 1], labels or None;
  ``rows=(lo, hi)``: only rows ``lo..hi`` of the (limited) split. Image folders and TFDS
  decode only those (`RANDOM_ACCESS`); the other datasets' archives are read whole.

  ``spec`` is a mapping or ConfigDict with fields:
    name: one of ``DATASET_NAMES``.
    path: the dataset's directory (the TFDS ``data_dir`` for tfds; unused for digits).
    resolution: optional square size. Images are resized (``_resize``: BOX for integer
      downsampling, LANCZOS otherwise), never padded, so MNIST 28 -> 32 is a LANCZOS
      upsampling. Required for image_folder.
    tfds_name: the TFDS dataset name, for tfds.
    limit: optional number of rows to keep: the first ``limit`` rows of the split.
  An image folder has a single split, "train".
  """
  name, path = spec.get("name"), spec.get("path")
  resolution, limit = spec.get("resolution"), spec.get("limit")
  if name not in DATASET_NAMES:
    raise DataError(f"Unknown dataset name {name!r}; valid names are {', '.join(DATASET_NAMES)}.")
  if name != "digits" and not path:
    raise DataError(f"Dataset {name!r} needs data.path, the directory holding its files.")
  check_positive(resolution, "resolution")
  check_positive(limit, "limit")
  if name == "digits":
    images, labels = load_digits(split)
  elif name == "mnist":
    images, labels = load_mnist_idx(path, split)
  elif name == "cifar10":
    images, labels = load_cifar10_batches(path, split)
  elif name == "image_folder":
    _check_split(split, ("train",))
    # Decoding files is the slow part, so these two loaders stop at `limit` themselves.
    images, labels = load_image_folder(path, resolution, limit, rows)
  else:
    if not spec.get("tfds_name"):
      raise DataError("Dataset 'tfds' needs data.tfds_name, the TFDS dataset to read.")
    images, labels = load_tfds(spec.get("tfds_name"), split, path,
                               resolution=resolution, limit=limit, rows=rows)
  if name not in RANDOM_ACCESS:
    keep = slice(*rows) if rows else slice(None)
    images = images[:limit][keep]
    labels = None if labels is None else labels[:limit][keep]
  if resolution is not None:
    images = resize_images(images, resolution)
  chex.assert_rank(images, 4)
  chex.assert_type(images, np.float32)
  if labels is not None:
    chex.assert_shape(labels, (len(images),))
  return images, labels
