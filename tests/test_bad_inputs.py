"""A table of bad inputs to the library's entry point: each is refused before any compute
with one sentence naming the field (a `ConfigError`, which the launchers turn into exit 2:
tests/test_cli.py) and the workdir is never created. Command-line forms are in
tests/test_cli.py. Values that are legal but surprising, and evaluators that cannot apply
to the rows, are one warning line each and the run goes on."""
import logging
import pathlib
import re

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


NAN, INF = float("nan"), float("inf")

CASES = [
    # (config, overrides, words of the sentence: each names the field)
    ("linreg:replace", {"num_seeds": 0}, "num_seeds must be at least 1"),
    ("linreg:replace", {"n_real": 0}, "n_real must be at least 1"),
    ("linreg:replace", {"n_synth": -100}, "n_synth must be at least 1"),
    ("linreg:replace", {"generations_per_chunk": -1}, "generations_per_chunk must be >= 0"),
    ("linreg:replace", {"train_from": "yesterday"}, "train_from must be 'scratch' or"),
    ("linreg:replace", {"checkpoint_every_steps": -5}, "checkpoint_every_steps must be"),
    ("linreg:replace", {"log_every_steps": 0}, "log_every_steps must be at least 1"),
    ("linreg:replace", {"sample_chunk_rows": -4}, "sample_chunk_rows must be >= 0"),
    ("linreg:replace", {"mesh.fsdp": 3}, "mesh.fsdp=3 must be a positive divisor"),
    ("linreg:replace", {"mesh.data": 0}, "mesh.data=0 does not fit"),
    ("linreg:replace", {"policy.mix_lambda": NAN}, "mix_lambda must be >= 0"),
    ("linreg:replace", {"policy.mix_lambda": -INF}, "mix_lambda must be >= 0"),
    # Seeds: JAX makes keys from int32 seeds (rng.seed_keys).
    ("linreg:replace", {"seed": 2**32}, "seed must be in [0, 2147483647]"),
    ("linreg:replace", {"seed": -1}, "seed must be in [0, 2147483647]"),
    ("linreg:replace", {"data.sigma2": NAN}, "data.sigma2 must be >= 0"),
    ("linreg:replace", {"data.sigma2": INF}, "data.sigma2 must be >= 0 (a finite number"),
    ("linreg:replace", {"data.n_test": 0}, "data.n_test must be at least 1"),
    ("gaussian:replace", {"data.condition": INF}, "data.condition must be >= 1"),
    ("gaussian:replace", {"data.condition": 0.5}, "data.condition must be >= 1"),
    ("gaussian:replace", {"data.dim": 0}, "data.dim must be at least 1"),
    ("kde_moons:replace", {"model.bandwidth": "-1"}, "model.bandwidth must be > 0"),
    ("kde_moons:replace", {"model.bandwidth": "nan"}, "model.bandwidth must be > 0"),
    ("kde_moons:replace", {"model.bandwidth": "inf"}, "model.bandwidth must be > 0"),
    ("kde_moons:replace", {"model.name": "vae"}, "vae model needs rows of one image"),
    ("kde_moons:replace", {"model.name": "linreg"}, "linreg model needs rows of labels 'y'"),
    ("kde_moons:replace", {"evals.samples2d.num_samples": 0},
     "samples2d num_samples must be at least 2"),
    ("kde_moons:replace", {"evals.samples2d.min_mode_fraction": NAN},
     "samples2d min_mode_fraction must be in (0, 1]"),
    ("kde_moons:replace", {"evals.samples2d.projection_seed": -3},
     "samples2d projection_seed must be in [0, 2147483647]"),
    ("kde_moons:replace", {"data.n_test": -1}, "data.n_test must be at least 1"),
    ("mnist_vae:replace", {"model.optimizer": "sgd"}, "Unknown optimizer 'sgd'"),
    ("mnist_vae:replace", {"model.lr_schedule": "step"}, "Unknown learning-rate schedule"),
    ("mnist_vae:replace", {"model.dtype": "float16"}, "Unknown model.dtype 'float16'"),
    ("mnist_vae:replace", {"model.likelihood": "poisson"}, "Unknown VAE likelihood"),
    ("mnist_vae:replace", {"model.steps": 0}, "exactly one of model.steps or model.epochs"),
    ("mnist_vae:replace", {"data.path": "/nonexistent/mnist"}, "/nonexistent/mnist"),
    ("mnist_vae:replace", {"n_real": 100_000}, "real training rows but the dataset has"),
    ("mnist_vae:replace", {"evals": {"q": {"num_samples": 8}}}, "config.evals.q needs a 'type'"),
    ("mnist_vae:replace", {"evals": {"q": {"type": "fid"}}}, "Unknown evaluator type 'fid'"),
    ("mnist_vae:replace", {"evals": {"q": {"type": "image_quality", "num_samples": 8}}},
     "config.evals.q (image_quality) lacks option classifier_steps, grid, inception_weights"),
    ("mnist_vae:replace", {"evals.quality.num_samples": 1},
     "image_quality num_samples must be at least 2"),
    # The optax families' training fields (models/training.py), on the VAE of digits_vae.
    ("digits_vae", {"model.learning_rate": -0.1}, "model.learning_rate must be > 0"),
    ("digits_vae", {"model.learning_rate": NAN}, "model.learning_rate must be > 0"),
    ("digits_vae", {"model.batch_size": 0}, "model.batch_size must be at least 1"),
    ("digits_vae", {"model.batch_size": -16}, "model.batch_size must be at least 1"),
    ("digits_vae", {"model.ema_decay": 1.0}, "model.ema_decay must be in [0, 1)"),
    ("digits_vae", {"model.grad_clip": 0.0}, "model.grad_clip must be > 0"),
    ("digits_vae", {"model.epochs": INF, "model.steps": 0}, "model.epochs must be >= 0"),
    ("digits_vae", {"model.temperature": INF}, "model.temperature must be > 0"),
    ("digits_vae", {"model.latent_dim": 0}, "model.latent_dim must be at least 1"),
    ("digits_vae", {"data.n_test": 0}, "data.n_test must be at least 1"),
    ("toy_diffusion:replace", {"model.kind": "score_sde"}, "score_sde"),
    ("toy_diffusion:replace", {"model.network": "unet"}, "unet"),
    ("toy_diffusion:replace", {"model.temperature": INF}, "model.temperature must be > 0"),
    ("toy_diffusion:replace", {"model.temperature": 0.0}, "model.temperature must be > 0"),
    ("toy_diffusion:replace", {"model.learning_rate": -1e-3}, "model.learning_rate must be > 0"),
    ("toy_diffusion:replace", {"model.beta_end": NAN}, "model.beta_end must be in (0, 1)"),
    ("toy_diffusion:replace", {"model.eval_seed": 2**40}, "model.eval_seed must be in"),
    ("toy_diffusion:replace", {"model.mlp.width": 0}, "model.mlp.width must be at least 1"),
    ("cifar10:mix,process=edm", {"model.sigma_min": 0.0}, "model.sigma_min must be > 0"),
    ("cifar10:mix,process=edm", {"model.unet.dropout": 1.0}, "model.unet.dropout must be in [0, 1)"),
    ("cifar10:mix,process=edm", {"model.unet.channel_mult": (1, 0)},
     "model.unet.channel_mult entries must be at least 1"),
    ("toy_flow:replace", {"model.sinkhorn_eps": NAN}, "model.sinkhorn_eps must be > 0"),
    ("toy_flow:replace", {"model.rtol": -1e-3}, "model.rtol must be > 0"),
    ("toy_flow:replace", {"model.temperature": INF}, "model.temperature must be > 0"),
    ("toy_flow:replace", {"model.batch_size": 0}, "model.batch_size must be at least 1"),
    # TinyStories: inf once wrote one-token stories; 0 is greedy decoding and fine.
    ("tinystories:replace", {"model.temperature": INF}, "model.temperature must be >= 0"),
    ("tinystories:replace", {"model.top_p": NAN}, "model.top_p must be in (0, 1]"),
    ("tinystories:replace", {"model.top_k": -1}, "model.top_k must be >= 0"),
    ("tinystories:replace", {"model.b2": 1.0}, "model.b2 must be in [0, 1)"),
    ("tinystories:replace", {"model.weight_decay": NAN}, "model.weight_decay must be >= 0"),
    ("tinystories:replace", {"data.limit": -5}, "data.limit must be at least 1"),
    ("molecules:replace", {"model.learning_rate": NAN}, "model.learning_rate must be > 0"),
    ("molecules:replace", {"model.step_lr": -1e-6}, "model.step_lr must be > 0"),
    ("molecules:replace", {"model.cutoff": INF}, "model.cutoff must be > 0"),
    ("molecules:replace", {"data.prune_rms": NAN}, "data.prune_rms must be >= 0"),
    ("molecules:replace", {"data.seed": 2**40}, "data.seed must be in [0, 2147483647]"),
    ("molecules:replace", {"evals.quality.ratio": 0},
     "conformer_quality ratio must be at least 1"),
    # A smoke variant swaps in the embedded digits: a dataset's path would be ignored.
    ("cifar10:mix,process=ddpm", {"data.path": "/data/cifar-10-batches-py"},
     "data.path=/data/cifar-10-batches-py is set, but the digits are scikit-learn's own"),
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


def test_a_run_that_could_never_fit_is_one_sentence_before_the_workdir(tmp_path, monkeypatch):
  """The pool and a compiled chunk's per-generation states are counted against all of the
  devices' memory (here a machine of 64 KiB): too many generations in one chunk, or an
  accumulating pool too large, is refused; the same run in chunks of one generation, whose
  replace pool stays one block, fits."""
  from collapse_jax import host_memory
  monkeypatch.setattr(host_memory, "capacity_bytes", lambda devices: 64 * 2**10)
  config = load_config("linreg:replace")
  config.num_generations = 2000
  with pytest.raises(validate.ConfigError, match=r"^The run \(its data pool, and the model "
                     r"states of 2000 generations per compiled chunk\) needs at least .* GiB "
                     r"at once, more than the 0.0 GiB of memory here; lower num_generations"):
    experiment.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  config = load_config("linreg:accumulate")
  config.num_generations, config.generations_per_chunk = 2000, 1
  with pytest.raises(validate.ConfigError, match=r"states of 1 generation per compiled chunk"):
    experiment.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
  config = load_config("linreg:replace")
  config.num_generations, config.generations_per_chunk = 4, 1
  rows = experiment.train_and_evaluate(config, tmp_path / "run")
  assert max(r["generation"] for r in rows) == 3


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


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_batch_larger_than_the_rows_warns_in_one_line_and_validates(caplog):
  config = load_config("toy_diffusion:replace")  # 64 real rows, 64 synthetic per generation
  with caplog.at_level(logging.WARNING):
    validate.check(config)
  assert not _warnings(caplog)
  config.model.batch_size = 500
  with caplog.at_level(logging.WARNING):
    validate.check(config)
  (warning,) = _warnings(caplog)
  assert "model.batch_size=500" in warning and "64 rows" in warning and "\n" not in warning


@pytest.mark.parametrize("rate,warns", [(1e-3, False), (1.0, False), (1e3, True)])
def test_a_learning_rate_above_one_warns_in_one_line(caplog, rate, warns):
  """1e3 for 1e-3 trains (legal) until the weights blow up: a warning names the field."""
  config = load_config("toy_diffusion:replace")
  config.model.learning_rate = rate
  with caplog.at_level(logging.WARNING):
    validate.check(config)
  warnings = _warnings(caplog)
  assert len(warnings) == warns
  assert all("model.learning_rate=1000 is above 1" in w and "\n" not in w for w in warnings)


def test_batch_is_compared_with_the_fewest_rows_a_generation_trains_on(caplog):
  # replace trains generation 1 on its 16 synthetic rows alone; accumulate keeps the 64
  # real ones in every generation.
  for policy, warns in (("replace", True), ("accumulate", False)):
    config = load_config("toy_diffusion:replace")
    config.policy.name, config.n_synth, config.model.batch_size = policy, 16, 32
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      validate.check(config)
    assert len(_warnings(caplog)) == warns, policy


def test_evaluator_that_cannot_apply_to_the_rows_is_dropped_with_one_line(caplog, tmp_path):
  """configs/gaussian.py declares the 2-D samples2d evaluator; at data.dim=1 the run goes
  on without it instead of being refused."""
  config = load_config("gaussian:replace")
  config.data.dim, config.num_generations = 1, 1
  with caplog.at_level(logging.WARNING):
    rows = experiment.train_and_evaluate(config, tmp_path / "run")
  (warning,) = [w for w in _warnings(caplog) if "evaluator" in w]  # libraries may warn too
  assert "config.evals.samples2d" in warning and "2-D points" in warning, warning
  assert "\n" not in warning
  assert rows and not any("energy_distance" in row for row in rows)
  assert not (tmp_path / "run" / "samples2d").exists()


@pytest.mark.parametrize("name,group,field,words", [
    ("tinystories:replace", "model", "top_k", "no field 'top_k', which "
     "collapse_jax/models/transformer_lm.py reads"),
    ("toy_diffusion:replace", "model", "eval_seed", "no field 'eval_seed', which "
     "collapse_jax/generative/family.py reads"),
    ("digits_vae", "model", "grad_clip", "config.model has no training field grad_clip"),
    ("mnist_vae:replace", "evals.quality", "grid",
     "config.evals.quality (image_quality) lacks option grid"),
])
def test_a_field_the_run_reads_is_never_defaulted(name, group, field, words, tmp_path):
  """No field has a hidden default: one the config lacks is one sentence, before any write."""
  config = load_config(name)
  with config.unlocked():
    node = config
    for key in group.split("."):
      node = node[key]
    del node[field]
  with pytest.raises(validate.ConfigError, match=re.escape(words)):
    experiment.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()
