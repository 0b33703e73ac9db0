"""benchmarks/accelerator_check.py at --tiny shapes: every section runs the package's own
config, family, training loop and sampler, and writes finite figures into the JSON record;
a section that raises is recorded and fails the exit code without stopping the others."""
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accelerator_check  # noqa: E402


def positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_check_runs_every_section_and_records_finite_figures(tmp_path, capsys):
  path = tmp_path / "accel.json"
  # A made-up peak: the MFU arithmetic runs too (a CPU has no known peak: n/a).
  assert accelerator_check.main(["--tiny", "--json", str(path), "--peak_tflops", "1",
                                 "--repeats", "1"]) == 0
  record = json.loads(path.read_text())
  sections = record["figures"]["sections"]
  assert list(sections) == list(accelerator_check.SECTIONS)
  for name, s in sections.items():
    assert s["status"] == "ok", (name, s.get("error"))
    train = s["train"]
    assert train["finite"] and train["steps"] == accelerator_check.TINY[name].steps, name
    for key in ("compile_s", "step_s", "examples_per_s", "flops_per_step", "tflops_per_s",
                "mfu", "loss_first", "loss_last", "xla_flops_per_step"):
      assert positive(train[key]), (name, key, train[key])
    if "sample" in s:
      rate = s["sample"].get("tokens_per_s", s["sample"].get("images_per_s"))
      assert positive(rate) and positive(s["sample"]["compile_s"]), (name, s["sample"])
  assert set(sections) - {"geodiff"} == {n for n, s in sections.items() if "sample" in s}
  lm = sections["lm"]
  # Every decoded story runs to the end of its row (the rows hold no EOS to learn).
  context = accelerator_check.TINY["lm"].shape[0]
  assert lm["sample"]["tokens"] == lm["sample"]["stories"] * (context - 2)
  # The analytic LM count (the MFU's basis) agrees with XLA's count of the step.
  assert 0.95 < lm["train"]["xla_over_analytic"] < 1.3, lm["train"]["xla_over_analytic"]
  assert "[not the target's workload: --tiny True]" in record["headline"]
  out = capsys.readouterr().out
  assert all(f"| {name} |" in out for name in sections)


def test_a_failing_section_is_recorded_and_fails_the_exit_code(tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise RuntimeError("made to fail")
  monkeypatch.setitem(accelerator_check.RUNNERS, "geodiff", broken)
  path = tmp_path / "accel.json"
  assert accelerator_check.main(["--tiny", "--only", "geodiff", "--json", str(path)]) == 1
  section = json.loads(path.read_text())["figures"]["sections"]["geodiff"]
  assert section["status"] == "failed" and "made to fail" in section["error"]
