"""Tests of collapse_jax.data.image_files and images on real MNIST and digits, and on stand-ins written in
the real on-disk formats of CIFAR-10, image folders and TFDS."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from collapse_jax.data import image_files as im
from collapse_jax.data import images

from conftest import MNIST_IS_STAND_IN, idx

MNIST_DIR = Path(os.environ["COLLAPSE_JAX_MNIST"])  # (tests/conftest.py)
needs_mnist = pytest.mark.skipif(MNIST_IS_STAND_IN, reason="the real MNIST is not present")


def _row_set(images: np.ndarray) -> list[bytes]:
  return sorted(row.tobytes() for row in images)


# ---------------------------------------------------------------------------- digits


def test_digits_split_is_a_seeded_partition():
  train, train_labels = im.load_digits("train")
  test, test_labels = im.load_digits("test")
  assert train.shape == (1797 - 359, 8, 8, 1) and test.shape == (359, 8, 8, 1)
  assert train.dtype == np.float32 and train_labels.dtype == np.int32
  assert train.min() == -1.0 and train.max() == 1.0
  from sklearn import datasets  # (seconds to import: here, not at collection)
  full = datasets.load_digits()
  # Read from scikit-learn's CSV without importing it: exactly load_digits' arrays.
  pixels, labels = im._sklearn_digits()
  np.testing.assert_array_equal(pixels, full.images)
  np.testing.assert_array_equal(labels, full.target)
  expected = (full.images / 8.0 - 1.0).astype(np.float32)[..., None]
  assert _row_set(np.concatenate([train, test])) == _row_set(expected)
  np.testing.assert_array_equal(im.load_digits("test")[0], test)
  assert not np.array_equal(im.load_digits("test", seed=1)[0], test)
  assert set(test_labels.tolist()) == set(range(10))


def test_digits_rejects_bad_arguments():
  with pytest.raises(im.DataError, match="Unknown split 'val'"):
    im.load_digits("val")
  with pytest.raises(im.DataError, match="test_fraction"):
    im.load_digits("train", test_fraction=1.0)


# ----------------------------------------------------------------------------- MNIST


@needs_mnist
@pytest.mark.parametrize("split, counts, first_label, mean", [
    ("train", [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], 5, 0.1307),
    ("test", [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], 7, 0.1325),
])
def test_mnist_idx_reads_the_real_files(split, counts, first_label, mean):
  images, labels = im.load_mnist_idx(MNIST_DIR, split)
  assert images.shape == (sum(counts), 28, 28, 1) and images.dtype == np.float32
  assert labels.dtype == np.int32 and labels[0] == first_label
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), counts)
  assert images.min() == -1.0 and images.max() == 1.0
  # The well-known mean intensity of MNIST in [0, 1].
  assert abs(float((images.mean() + 1) / 2) - mean) < 5e-4


def _write_gz(path: Path, payload: bytes) -> None:
  with gzip.open(path, "wb") as f:
    f.write(payload)


def test_mnist_idx_round_trips_and_checks_headers(tmp_path):
  pixels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
  _write_gz(tmp_path / "t10k-images-idx3-ubyte.gz", idx(0x803, (2, 28, 28), pixels.tobytes()))
  _write_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", idx(0x801, (2,), bytes([3, 9])))
  images, labels = im.load_mnist_idx(tmp_path, "test")
  np.testing.assert_array_equal(np.rint((images[..., 0] + 1) * 127.5), pixels)
  np.testing.assert_array_equal(labels, [3, 9])

  with pytest.raises(im.DataError, match="train-images-idx3-ubyte.gz does not exist"):
    im.load_mnist_idx(tmp_path, "train")
  # Labels where images belong: the magic number says so.
  _write_gz(tmp_path / "t10k-images-idx3-ubyte.gz", idx(0x801, (2,), bytes([3, 9])))
  with pytest.raises(im.DataError, match="magic number is 00000801, expected 00000803"):
    im.load_mnist_idx(tmp_path, "test")
  _write_gz(tmp_path / "t10k-images-idx3-ubyte.gz", idx(0x803, (3, 28, 28), pixels.tobytes()))
  with pytest.raises(im.DataError, match="needs 2352"):
    im.load_mnist_idx(tmp_path, "test")
  (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
  with pytest.raises(im.DataError, match="not a readable gzip file"):
    im.load_mnist_idx(tmp_path, "test")
  with pytest.raises(im.DataError, match="Data directory .*nowhere does not exist"):
    im.load_mnist_idx(tmp_path / "nowhere", "test")


# -------------------------------------------------------------------------- CIFAR-10


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
  # The layout of the official files: a dict with bytes keys, pickled by Python 2 (protocol 2).
  batch = {b"batch_label": b"stand-in", b"data": data, b"labels": labels,
           b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
  with open(path, "wb") as f:
    pickle.dump(batch, f, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
  directory = tmp_path / "cifar-10-batches-py"
  directory.mkdir()
  for b in range(1, 6):
    data = np.zeros((2, 3072), np.uint8)
    # Row 0 of batch b: pixel (row 5, col 7) has channel values (b, 100 + b, 200 + b).
    for channel in range(3):
      data[0, channel * 1024 + 5 * 32 + 7] = 100 * channel + b
    _write_cifar_batch(directory / f"data_batch_{b}", data, [b, b + 1])
  _write_cifar_batch(directory / "test_batch", np.full((3, 3072), 255, np.uint8), [0, 1, 2])
  return tmp_path


def test_cifar10_pixel_layout_round_trips(cifar_dir):
  images, labels = im.load_cifar10_batches(cifar_dir, "train")
  assert images.shape == (10, 32, 32, 3) and images.dtype == np.float32
  np.testing.assert_array_equal(labels, [1, 2, 2, 3, 3, 4, 4, 5, 5, 6])
  pixels = np.rint((images + 1) * 127.5).astype(np.uint8)
  for b in range(1, 6):
    np.testing.assert_array_equal(pixels[2 * (b - 1), 5, 7], [b, 100 + b, 200 + b])
  assert pixels.sum() == sum(3 * b + 300 for b in range(1, 6))
  # The extracted folder itself is accepted as well as its parent.
  test, test_labels = im.load_cifar10_batches(cifar_dir / "cifar-10-batches-py", "test")
  assert test.shape == (3, 32, 32, 3) and np.all(test == 1.0)
  np.testing.assert_array_equal(test_labels, [0, 1, 2])


def test_cifar10_errors(cifar_dir):
  directory = cifar_dir / "cifar-10-batches-py"
  (directory / "data_batch_3").unlink()
  with pytest.raises(im.DataError, match="data_batch_3 does not exist"):
    im.load_cifar10_batches(cifar_dir, "train")
  with open(directory / "test_batch", "wb") as f:
    pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
  with pytest.raises(im.DataError, match="no b'data' and b'labels'"):
    im.load_cifar10_batches(cifar_dir, "test")
  (directory / "test_batch").write_bytes(b"garbage")
  with pytest.raises(im.DataError, match="is not a readable pickle"):
    im.load_cifar10_batches(cifar_dir, "test")


# ---------------------------------------------------------------------- image folder


@pytest.fixture
def image_dir(tmp_path) -> Path:
  # Constant colours, so any resize filter keeps them and the order is visible.
  (tmp_path / "00000").mkdir()
  Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "00000" / "00001.png")
  Image.new("L", (16, 16), 0).save(tmp_path / "00000" / "00000.png")
  Image.new("RGB", (12, 12), (0, 0, 255)).save(tmp_path / "a.JPEG", quality=100)
  Image.new("RGBA", (4, 4), (0, 255, 0, 10)).save(tmp_path / "b.png")
  (tmp_path / "notes.txt").write_text("not an image")
  return tmp_path


def test_image_folder_sorted_rgb_resized(image_dir):
  images, labels = im.load_image_folder(image_dir, 4)
  assert labels is None and images.shape == (4, 4, 4, 3) and images.dtype == np.float32
  colours = np.rint((images.mean(axis=(1, 2)) + 1) * 127.5)
  # Sorted by relative path: 00000/00000.png, 00000/00001.png, a.JPEG, b.png.
  np.testing.assert_allclose(colours, [[0, 0, 0], [255, 0, 0], [0, 0, 255], [0, 255, 0]],
                             atol=2)
  np.testing.assert_array_equal(im.load_image_folder(image_dir, 4, limit=2)[0], images[:2])


def test_resize_filters():
  checker = np.kron(np.indices((4, 4)).sum(0) % 2, np.ones((2, 2)))[None, ..., None] * 2 - 1
  # 8 -> 4 is an integer downsampling: BOX averages each 2x2 block exactly.
  np.testing.assert_array_equal(im.resize_images(checker.astype(np.float32), 4)[0, ..., 0],
                                np.indices((4, 4)).sum(0) % 2 * 2 - 1)
  # 8 -> 3 is not: LANCZOS, whose ringing is clipped back into [-1, 1].
  lanczos = im.resize_images(checker.astype(np.float32), 3)
  assert lanczos.shape == (1, 3, 3, 1) and lanczos.min() >= -1 and lanczos.max() <= 1


def test_image_folder_errors(tmp_path):
  with pytest.raises(im.DataError, match="does not exist"):
    im.load_image_folder(tmp_path / "ffhq", 4)
  (tmp_path / "x.txt").write_text("")
  with pytest.raises(im.DataError, match="holds no .png/.jpg/.jpeg files"):
    im.load_image_folder(tmp_path, 4)
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(im.DataError, match="Cannot read image .*broken.png"):
    im.load_image_folder(tmp_path, 4)


def _source(**data):
  return images.build(ml_collections.ConfigDict(
      dict({"path": None, "resolution": None, "tfds_name": None, "limit": None}, **data)))


def test_folder_source_decodes_only_the_rows_asked_for(tmp_path, monkeypatch):
  for i in range(7):  # the red level names the file
    Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(tmp_path / f"{i:05d}.png")
  source = _source(name="image_folder", path=str(tmp_path), resolution=4, n_test=2)
  opened, open_image = [], Image.open
  monkeypatch.setattr(Image, "open", lambda f, *a: opened.append(Path(f).name) or open_image(f, *a))
  assert source.num_train == 5 and source.row_spec.shape == (4, 4, 3) and not opened
  part = source.consts(rows=(1, 3))
  # Training files 1 and 2, then the test set (the last n_test files); no other file.
  assert opened == ["00001.png", "00002.png", "00005.png", "00006.png"]
  whole = source.consts()
  np.testing.assert_array_equal(part["train"], whole["train"][1:3])
  np.testing.assert_array_equal(part["test"], whole["test"])
  assert part["train"].dtype == np.uint8 and part["train"][:, 0, 0, 0].tolist() == [30, 60]


def test_archive_source_rows_are_those_training_rows():
  source = _source(name="digits", n_test=50)
  whole, part = source.consts(), source.consts(rows=(5, 20))
  np.testing.assert_array_equal(part["train"], whole["train"][5:20])
  np.testing.assert_array_equal(part["test"], whole["test"])


# ------------------------------------------------------------------------------ TFDS


def _prepare_tiny_tfds(data_dir: Path, splits=("train",)) -> None:
  """Prepares a 5-record array_record dataset (each split) without TensorFlow (PIL encodes
  the PNGs)."""
  import tensorflow_datasets as tfds

  class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(4, 4, 3)),
          "label": tfds.features.ClassLabel(num_classes=5)}))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples() for split in splits}

    def _generate_examples(self):
      for i in range(5):
        yield i, {"image": Image.new("RGB", (4, 4), (50 * i,) * 3), "label": i}

  TinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()


def test_tfds_reads_a_prepared_dataset(tmp_path):
  _prepare_tiny_tfds(tmp_path)
  images, labels = im.load_tfds("tiny_images", "train", tmp_path)
  assert images.shape == (5, 4, 4, 3) and labels.dtype == np.int32
  # Record order is TFDS' stored order; each image still matches its label.
  np.testing.assert_array_equal(np.rint((images[:, 0, 0, 0] + 1) * 127.5), 50 * labels)
  assert sorted(labels.tolist()) == list(range(5))
  small, _ = im.load_tfds("tiny_images", "train", tmp_path, resolution=2, limit=3)
  np.testing.assert_array_equal(small, images[:3, :2, :2])
  with pytest.raises(im.DataError, match="split 'test' is not prepared"):
    im.load_tfds("tiny_images", "test", tmp_path)
  with pytest.raises(im.DataError, match="does not exist"):
    im.load_tfds("tiny_images", "train", tmp_path / "missing")


def test_tfds_source_decodes_only_the_rows_asked_for(tmp_path, monkeypatch):
  _prepare_tiny_tfds(tmp_path, splits=("train", "test"))
  source = _source(name="tfds", tfds_name="tiny_images", path=str(tmp_path), n_test=2)
  whole, _ = im.load_tfds("tiny_images", "train", tmp_path)
  decoded, to_unit = [], im._to_unit_range
  monkeypatch.setattr(im, "_to_unit_range", lambda x, m: decoded.append(1) or to_unit(x, m))
  assert source.num_train == 5 and not decoded
  part = source.consts(rows=(1, 3))
  assert len(decoded) == 2 + 5  # training records 1 and 2, and the test split
  np.testing.assert_array_equal(images.from_pixels(part["train"]), whole[1:3])
  assert source.row_spec.shape == (4, 4, 3)
  empty, labels = im.load_tfds("tiny_images", "train", tmp_path, rows=(5, 7))
  assert empty.shape == (0, 4, 4, 3) and labels.shape == (0,)


# ------------------------------------------------------------------------ dispatcher


@needs_mnist
def test_load_images_mnist_resized_and_limited():
  spec = ml_collections.ConfigDict({"name": "mnist", "path": str(MNIST_DIR),
                                    "resolution": 32, "limit": 100})
  images, labels = im.load_images(spec, "test")
  assert images.shape == (100, 32, 32, 1) and images.min() >= -1 and images.max() <= 1
  full, full_labels = im.load_mnist_idx(MNIST_DIR, "test")
  np.testing.assert_array_equal(labels, full_labels[:100])
  np.testing.assert_allclose(images.mean(), full[:100].mean(), atol=0.01)


def test_load_images_dispatches(cifar_dir, image_dir):
  digits, _ = im.load_images({"name": "digits", "limit": 10}, "test")
  np.testing.assert_array_equal(digits, im.load_digits("test")[0][:10])
  cifar, labels = im.load_images({"name": "cifar10", "path": cifar_dir, "resolution": 16},
                                 "train")
  assert cifar.shape == (10, 16, 16, 3) and labels.shape == (10,)
  folder, labels = im.load_images({"name": "image_folder", "path": image_dir,
                                   "resolution": 2, "limit": 3}, "train")
  assert folder.shape == (3, 2, 2, 3) and labels is None


def test_load_images_errors(tmp_path):
  with pytest.raises(im.DataError, match="Unknown dataset name 'imagenet'; valid names are "
                     "digits, mnist, cifar10, image_folder, tfds."):
    im.load_images({"name": "imagenet"}, "train")
  with pytest.raises(im.DataError, match="needs data.path"):
    im.load_images({"name": "mnist"}, "train")
  missing = tmp_path / "mnist"
  with pytest.raises(im.DataError, match=f"Data directory {missing} does not exist."):
    im.load_images({"name": "mnist", "path": str(missing)}, "train")
  with pytest.raises(im.DataError, match="needs data.tfds_name"):
    im.load_images({"name": "tfds", "path": str(tmp_path)}, "train")
  with pytest.raises(im.DataError, match="needs data.resolution"):
    im.load_images({"name": "image_folder", "path": str(tmp_path)}, "train")
  with pytest.raises(im.DataError, match="limit must be a positive integer"):
    im.load_images({"name": "digits", "limit": 0}, "train")


def test_eight_bit_sources_cache_pixels_and_hand_out_the_loaders_floats(cifar_dir):
  """The loaded training set is cached as uint8 (a quarter of the float bytes); the pool's
  rows and the labelled images equal the loader's floats."""
  source = _source(name="cifar10", path=str(cifar_dir), n_test=2)
  train, labels = im.load_images({"name": "cifar10", "path": str(cifar_dir)}, "train")
  assert source._splits()[0].dtype == np.uint8
  assert source.consts()["train"].dtype == np.uint8
  images, got_labels = source.labelled_train()
  assert images.dtype == np.float32
  np.testing.assert_array_equal(images, train)
  np.testing.assert_array_equal(got_labels, labels)
