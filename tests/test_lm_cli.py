"""Bad input to the TinyStories configs: one sentence, exit 2, the workdir untouched."""
import sys

import pytest

from collapse_jax import validate

import launcher_batch
from conftest import ROOT, load_config

def _check(config, message):
  with pytest.raises(validate.ConfigError, match=message) as e:
    validate.check(config)
  assert "\n" not in str(e.value)


def _corpus(tmp_path, text: bytes | str, name="c.txt"):
  path = tmp_path / name
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


@pytest.mark.parametrize("content,message", [
    (b"", "holds no stories"),
    (b"Once upon a time \xff\xfe a cat.\n", "is not UTF-8 text"),
], ids=["empty", "not-utf8"])
def test_bad_corpus_is_refused(tmp_path, content, message):
  config = load_config("tinystories:replace")
  config.data.path = _corpus(tmp_path, content)
  _check(config, message)


def test_corpus_with_fewer_stories_than_n_real_plus_test_is_refused():
  config = load_config("tinystories:replace")
  config.data.limit = 80  # 80 - 32 test stories < n_real = 64
  _check(config, "needs 64 real training rows but the dataset has 48")


@pytest.mark.parametrize("field,value,message", [
    ("data.vocab_size", 5000, "larger than SentencePiece can build from this corpus"),
    ("data.context", 65, "above the maximum length 64 of model preset 'gpt2-smoke'"),
    ("model.temperature", -0.5, "temperature must be >= 0"),
    ("model.prompt", "middle", "Unknown prompt strategy 'middle'"),
    ("model.preset", "gpt5", "Unknown transformer preset 'gpt5'"),
])
def test_bad_setting_is_refused(field, value, message):
  config = load_config("tinystories:accumulate")
  section, name = field.split(".")
  config[section][name] = value
  _check(config, message)


def test_launcher_exits_2_with_one_sentence_and_no_workdir(tmp_path):
  workdir, corpus = tmp_path / "run", _corpus(tmp_path, b"caf\xe9 story")
  out = launcher_batch.run(
      [sys.executable, str(ROOT / "launch" / "main.py"),
       "--config=configs/tinystories.py:replace,smoke", f"--workdir={workdir}",
       f"--config.data.path={corpus}"], cwd=ROOT)
  assert out.returncode == 2, out.stderr[-2000:]
  last = [l for l in out.stderr.splitlines() if l.strip()][-1]
  assert last.startswith("error: ") and "is not UTF-8 text" in last
  assert "Traceback" not in out.stderr and not workdir.exists()
