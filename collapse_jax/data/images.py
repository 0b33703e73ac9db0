"""The image Source of the self-consuming loop (``config.data.source = "images"``): a
dataset of data/image_files.py, shuffled per replicate and handed out in disjoint blocks."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import validate
from collapse_jax.data import image_files as files
from collapse_jax.data.source import RowSpec, Task, from_pixels, to_pixels
from collapse_jax.errors import DataError

_SPEC_FIELDS = ("name", "path", "resolution", "tfds_name", "limit")


@functools.lru_cache(maxsize=4)
def _folder_size(spec: tuple, n_test: int) -> int:
  """Training images of an image folder (its files less the last ``n_test``), counted
  without decoding any."""
  fields = dict(zip(_SPEC_FIELDS, spec))
  if not fields["path"]:
    raise DataError("Dataset 'image_folder' needs data.path, the directory holding its files.")
  if fields["resolution"] is None:
    raise DataError("An image folder needs data.resolution, the square size of its images.")
  files.check_positive(fields["resolution"], "resolution")
  n = len(files.image_files(fields["path"], fields["limit"]))
  if n <= n_test:
    raise DataError(f"The image folder {fields['path']} has {n} images; "
                    f"it needs more than n_test={n_test}.")
  return n - n_test


@functools.lru_cache(maxsize=4)
def _tfds_size(spec: tuple) -> int:
  """Training records of a TFDS spec (the first ``limit``), counted without decoding any."""
  fields = dict(zip(_SPEC_FIELDS, spec))
  missing = [what for what, given in (
      ("data.tfds_name, the TFDS dataset to read", fields["tfds_name"]),
      ("data.path, the directory holding its files", fields["path"])) if not given]
  if missing:
    raise DataError(f"Dataset 'tfds' needs {' and '.join(missing)}.")
  files.check_positive(fields["limit"], "limit")
  n = len(files.tfds_source(fields["tfds_name"], "train", fields["path"]))
  return n if fields["limit"] is None else min(fields["limit"], n)


@functools.lru_cache(maxsize=4)
def _load_splits(spec: tuple, n_test: int, rows: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """(train images, train labels or None, test images) of a spec tuple; cached, since
  validation loads them first. Training images of 8-bit datasets are held as uint8 pixels
  (`to_pixels`, lossless for them), so the cache keeps a quarter of their float32 bytes
  (CIFAR-10: 147 MiB, not 586).

  A dataset with one split (an image folder) gives its last ``n_test`` images to the test
  set, so test images are never trained on; it decodes only the files of training rows
  ``rows=(lo, hi)`` (None: all) and of the test set; TFDS decodes only those training
  records. The other datasets are called without ``rows``: their archives are read whole
  (`ImageSource.consts` slices them).
  """
  fields = dict(zip(_SPEC_FIELDS, spec))
  if fields["name"] == "image_folder":
    n = _folder_size(spec, n_test)
    train, _ = files.load_images(fields, "train", rows or (0, n))
    test, _ = files.load_images(fields, "train", (n, n + n_test))
    return to_pixels(train), None, test
  train, labels = files.load_images(fields, "train", rows)
  test, _ = files.load_images(dict(fields, limit=None), "test")
  return (to_pixels(train) if fields["name"] in PIXEL_DATASETS else train), labels, test[:n_test]


# Datasets of 8-bit images, whose pools hold uint8 pixels (digits has 17 grey levels: an
# 8-bit grid would move its real values, and its pools are small).
PIXEL_DATASETS = ("mnist", "cifar10", "image_folder", "tfds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSource:
  """Real images: each replicate shuffles the training set once and hands out disjoint
  blocks of it (block 0: the initial real set; later blocks: fresh_real's new data).

  Rows are ``{"image": [height, width, channels]}`` in [-1, 1], held in the pool as uint8
  pixels for 8-bit datasets (`RowSpec.pixels`; images resized on loading are rounded onto
  the 8-bit grid, as the reference pipelines' PNG files are).
  """
  spec: tuple
  n_test: int

  @property
  def name(self) -> str:
    return dict(zip(_SPEC_FIELDS, self.spec))["name"]

  @property
  def pixels(self) -> bool:
    return self.name in PIXEL_DATASETS

  def _splits(self, rows: tuple[int, int] | None = None):
    return _load_splits(self.spec, self.n_test, rows)  # one cache key for every caller

  @property
  def num_train(self) -> int:
    # Counted for random-access datasets: a multi-host run decodes only its own rows.
    if self.name == "image_folder":
      return _folder_size(self.spec, self.n_test)
    if self.name == "tfds":
      return _tfds_size(self.spec)
    return len(self._splits()[0])

  @property
  def row_spec(self) -> RowSpec:
    if self.name == "image_folder":  # RGB at the spec's resolution, nothing decoded
      resolution = dict(zip(_SPEC_FIELDS, self.spec))["resolution"]
      shape = (resolution, resolution, 3)
    else:  # TFDS: an empty range decodes one record
      shape = tuple(self._splits((0, 0) if self.name == "tfds" else None)[0].shape[1:])
    return RowSpec(fields={"image": (shape, "float32")}, data="image",
                   pixels=("image",) if self.pixels else ())

  def labelled_train(self) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Training images ``[n, h, w, c]`` and labels ``[n]`` (None: unlabelled dataset); an
    image folder has no labels, so (None, None) without decoding its files."""
    if self.name == "image_folder":
      return None, None
    train, labels, _ = self._splits()
    return (from_pixels(train) if self.pixels else train), labels

  def consts(self, rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The training images (uint8 pixels or float32; ``rows=(lo, hi)``: only those rows,
    None: all) and the float32 test images. Image folders and TFDS decode only those rows
    (and the test set); MNIST and CIFAR-10 archives are read whole and then sliced."""
    if self.name in files.RANDOM_ACCESS:
      train, _, test = self._splits(rows)
    else:
      train, _, test = self._splits()
      train = train[slice(*rows) if rows else slice(None)]
    return {"train": train, "test": test}

  def task(self, consts, key: jax.Array):
    # The source's own row count: placed on a mesh, consts["train"] has padding rows.
    perm = jax.random.permutation(key, self.num_train)
    return Task(test={"image": jnp.asarray(consts["test"])}, aux={"perm": perm})

  def real(self, consts, task, key: jax.Array, block: jax.Array, n: int):
    del key
    rows = jax.lax.dynamic_slice_in_dim(task.aux["perm"], block * n, n)
    return {"image": jnp.asarray(consts["train"])[rows]}


def build(data) -> ImageSource:
  return ImageSource(spec=tuple(data.get(f) for f in _SPEC_FIELDS), n_test=data.n_test)


def check_config(config) -> str | None:
  # resolution and limit: the loaders check them, for their own callers too.
  if config.data.name == "digits" and config.data.get("path"):
    # (e.g. a smoke variant, which swaps in the digits, given a real dataset's path)
    return (f"data.path={config.data.path} is set, but the digits are scikit-learn's own and "
            "no file is read; drop data.path, or name the dataset it holds with data.name "
            f"({', '.join(n for n in files.DATASET_NAMES if n != 'digits')}).")
  return validate.fields_problem(config.data, {"n_test": validate.COUNT}, "data.")
