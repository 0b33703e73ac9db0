"""A table of bad inputs to the library's entry point: each is refused before any compute
with one sentence (a `ConfigError`, which the launchers turn into exit 2: tests/test_cli.py)
and the workdir is never created. Command-line forms are in tests/test_cli.py."""
import pathlib

import ml_collections
import numpy as np
import pytest

from collapse_jax import experiment, validate

from conftest import load_config


def _set(config, key, value):
  node = config
  *path, leaf = key.split(".")
  for part in path:
    node = node[part]
  node[leaf] = value


def _image_folder(tmp_path, images: int):
  from PIL import Image
  folder = tmp_path / "folder"
  folder.mkdir()
  for i in range(images):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"{i}.png")
  (folder / "notes.txt").write_text("not an image")
  return str(folder)


CASES = [
    # (config, overrides, words of the sentence)
    ("linreg_replace", {"num_seeds": 0}, "num_seeds must be at least 1"),
    ("linreg_replace", {"n_real": 0}, "n_real and n_synth must be positive"),
    ("linreg_replace", {"generations_per_chunk": -1}, "generations_per_chunk must be >= 0"),
    ("linreg_replace", {"train_from": "yesterday"}, "train_from must be 'scratch' or"),
    ("linreg_replace", {"checkpoint_every_steps": -5}, "checkpoint_every_steps must be"),
    ("linreg_replace", {"log_every_steps": 0}, "log_every_steps must be at least 1"),
    ("linreg_replace", {"sample_chunk_rows": -4}, "sample_chunk_rows must be >= 0"),
    ("linreg_replace", {"mesh.fsdp": 3}, "mesh.fsdp=3 must be a positive divisor"),
    ("linreg_replace", {"mesh.data": 0}, "mesh.data=0 does not fit"),
    ("linreg_replace", {"policy.mix_lambda": float("nan")}, "mix_lambda must be >= 0"),
    ("kde_moons_replace", {"model.bandwidth": "-1"}, "bandwidth must be positive"),
    ("kde_moons_replace", {"model.name": "vae"}, "vae model needs rows of one image"),
    ("kde_moons_replace", {"model.name": "linreg"}, "linreg model needs rows of labels 'y'"),
    ("kde_moons_replace", {"evals.samples2d.num_samples": 0}, "samples2d"),
    ("gaussian_replace", {"data.dim": 5}, "samples2d"),
    ("mnist_vae_replace", {"model.optimizer": "sgd"}, "Unknown optimizer 'sgd'"),
    ("mnist_vae_replace", {"model.lr_schedule": "step"}, "Unknown learning-rate schedule"),
    ("mnist_vae_replace", {"model.dtype": "float16"}, "Unknown model.dtype 'float16'"),
    ("mnist_vae_replace", {"model.likelihood": "poisson"}, "Unknown VAE likelihood"),
    ("mnist_vae_replace", {"model.steps": 0}, "exactly one of model.steps or model.epochs"),
    ("mnist_vae_replace", {"data.path": "/nonexistent/mnist"}, "/nonexistent/mnist"),
    ("mnist_vae_replace", {"n_real": 100_000}, "real training rows but the dataset has"),
    ("mnist_vae_replace", {"evals": {"q": {"num_samples": 8}}}, "config.evals.q needs a 'type'"),
    ("mnist_vae_replace", {"evals": {"q": {"type": "fid"}}}, "Unknown evaluator type 'fid'"),
    ("mnist_vae_replace", {"evals": {"q": {"type": "image_quality", "num_samples": 1}}},
     "image_quality needs num_samples >= 2"),
    ("toy_diffusion_replace", {"model.kind": "score_sde"}, "score_sde"),
    ("toy_diffusion_replace", {"model.network": "unet"}, "unet"),
]


@pytest.mark.parametrize("name,overrides,words", CASES,
                         ids=[f"{n}-{'-'.join(o)}" for n, o, _ in CASES])
def test_bad_input_is_one_sentence_and_leaves_no_workdir(name, overrides, words, tmp_path):
  config = load_config(name)
  with config.unlocked():
    for key, value in overrides.items():
      _set(config, key, ml_collections.ConfigDict(value) if isinstance(value, dict) else value)
  workdir = tmp_path / "run"
  with pytest.raises(validate.ConfigError) as error:
    experiment.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert words in message and "\n" not in message and message.endswith("."), message
  assert not workdir.exists()


def test_image_folder_without_enough_images_is_refused(tmp_path):
  config = load_config("ffhq_accumulate")
  config.data.name, config.data.path = "image_folder", _image_folder(tmp_path, 3)
  with pytest.raises(validate.ConfigError, match="needs .* real training rows|images"):
    experiment.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_unreadable_image_in_a_folder_is_one_sentence_before_the_workdir(tmp_path):
  # Validation counts an image folder's files without decoding them; the broken file is
  # met when the rows are loaded, still before the workdir exists.
  folder = pathlib.Path(_image_folder(tmp_path, 40))
  (folder / "7.png").write_bytes(b"not a png")
  config = load_config("ffhq_accumulate")
  config.data.update({"name": "image_folder", "path": str(folder), "resolution": 8,
                      "n_test": 8})
  config.n_real = 16
  with pytest.raises(validate.ConfigError, match=r"Cannot read image .*7\.png\.$"):
    experiment.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
