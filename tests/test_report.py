"""The comparison report: the README's main job, shrunk, from its command line, and its
report.html rendered by a real headless browser (Debian's chromium; .ci/run installs it)."""
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import launcher_batch
from conftest import ROOT, read_metrics
from collapse_jax.report import runs as runs_lib

POLICIES = ("replace", "accumulate")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Run after the page's load event, in the browser: each image's decoded width and the text a
# reader sees, written into the DOM that --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth]),
    text: document.body.innerText});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, smoke_run):
  """The quick-start's command with the smoke config and two policies. The accumulate run is
  the suite's shared smoke run of that config, copied in: the command finds it finished and
  runs replace alone (it refuses a folder that holds another config's run)."""
  out = tmp_path_factory.mktemp("digits")
  shutil.copytree(smoke_run("digits_vae:accumulate")[0], out / "accumulate")
  result = launcher_batch.run(
      [sys.executable, str(ROOT / "launch" / "compare_policies.py"),
       "--config=configs/digits_vae.py:smoke", f"--policies={','.join(POLICIES)}",
       f"--workdir={out}"], cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return out, result.stdout


def test_quickstart_command_writes_one_report(comparison):
  out, stdout = comparison
  assert f"Wrote {out / 'report.html'}" in stdout
  for name in ("report.html", "comparison.png", "comparison.md"):
    assert (out / name).stat().st_size > 1000, name
  table = (out / "comparison.md").read_text()
  lines = table.splitlines()
  # Headline first, bookkeeping last; runs labelled by their policy alone.
  assert lines[2].startswith("| replace | test_loss |"), lines[:3]
  assert lines[-1].startswith("| accumulate | train_frac_synthetic |"), lines[-1]
  for policy in POLICIES:
    workdir = out / policy
    assert read_metrics(workdir)[-1]["generation"] == 1
    assert json.loads((workdir / runs_lib.TIMING_FILE).read_text())["wall_s"] > 0
    for grid in ("real.png", "generation_000.png", "generation_001.png"):
      assert (workdir / "samples" / grid).exists(), grid


def _chromium(*args, cwd):
  return subprocess.run(
      [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
       "--no-first-run", "--hide-scrollbars", f"--user-data-dir={cwd / 'profile'}", *args],
      cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("COLLAPSE_JAX_REQUIRE_BROWSER"),
                    reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_a_headless_browser(comparison, tmp_path):
  assert CHROMIUM, "chromium is not installed: .ci/run installs it (apt-get install chromium)"
  out, _ = comparison
  page = (out / "report.html").read_text()
  assert "http://" not in page and "https://" not in page  # opens offline, from disk
  probed = tmp_path / "probed.html"
  probed.write_text(page.replace("</body>", _PROBE + "</body>"))

  shot = tmp_path / "shot.png"
  result = _chromium("--window-size=1200,1800", f"--screenshot={shot}", probed.as_uri(),
                     cwd=tmp_path)
  assert shot.exists(), result.stderr[-2000:]
  pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
  assert pixels.std() > 20 and (pixels < 128).mean() > 0.01, "blank screenshot"

  dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), cwd=tmp_path)
  probe = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
  assert probe, dom.stderr[-2000:]
  probe = json.loads(html.unescape(probe.group(1)))
  # Every embedded image decoded: the strips (2 runs x 2 generations), the real grid, charts.
  assert len(probe["images"]) == page.count("<img ") >= 2 * 2 + 1 + 5
  broken = [alt for alt, complete, width in probe["images"] if not complete or width == 0]
  assert not broken, broken
  text = probe["text"]
  for policy in POLICIES:
    last = [r["test_loss"] for r in read_metrics(out / policy) if r["generation"] == 1]
    assert re.search(rf"{policy}: test_loss [^\n]* → {np.mean(last):.4g}", text), policy
  assert "fd_classifier" in text and "Wall time and training per run" in text
  assert "3 steps per generation" in text  # the smoke VAE's budget, said per run


def test_labels_say_what_they_are():
  assert runs_lib.policy_label({"name": "mix", "mix_lambda": 0.5}) == "mix (lambda=0.5)"
  assert runs_lib.policy_label({"name": "replace", "mix_lambda": 1.0}) == "replace"


def test_config_differences_and_order(tmp_path):
  for policy, lam in (("mix", 0.5), ("mix", 0.25)):
    w = tmp_path / f"{policy}{lam}"
    w.mkdir()
    (w / "config.json").write_text(json.dumps(
        {"policy": {"name": policy, "mix_lambda": lam}, "model": {"lr": 1e-3}, "seed": 0}))
    (w / "metrics.jsonl").write_text("".join(
        json.dumps({"generation": g, "seed": s, "train_examples": 10.0, "zeta": 1.0,
                    "test_loss": 1.0 + g, "precision": 0.5, "theory_test_loss": 1.0}) + "\n"
        for g in range(2) for s in range(2)))
  runs = runs_lib.load_runs(sorted(tmp_path.iterdir()))
  assert [r.label for r in runs] == ["mix (lambda=0.25)", "mix (lambda=0.5)"]
  assert runs_lib.config_differences(runs) == {"policy.mix_lambda": [0.25, 0.5]}
  assert runs_lib.ordered_metrics(runs) == ["test_loss", "precision", "zeta", "train_examples"]
  assert runs_lib.change(runs[0], "test_loss").percent == pytest.approx(100.0)
  seconds, how = runs_lib.wall_time(runs[0].workdir)
  assert seconds is not None and how == "from file times"


def test_the_training_budget_is_said_per_run():
  run = lambda model: runs_lib.Run(workdir=pathlib.Path("w"), label="x", config={"model": model},
                                   rows=[])
  assert runs_lib.training_budget(run({"name": "linreg"})) == "closed form"
  assert runs_lib.training_budget(run({"steps": 0, "epochs": 20.0, "initial_steps": 0})) == (
      "20 epochs of its pool per generation")
  assert runs_lib.training_budget(run({"steps": 391, "epochs": 0.0, "initial_steps": 400000})
                                  ) == "391 steps per generation (400000 steps at generation 0)"
