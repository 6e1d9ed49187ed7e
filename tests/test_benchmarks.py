"""The benchmark scripts run and print their side-by-side ratios (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def ratio(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    return float(match.group(1))


@pytest.mark.slow
def test_bench_train_prints_throughput_ratio_mfu_and_planned_memory():
    out = bench("bench_train.py", "--steps", "4")
    assert ratio(r"rewarm / Trainer: ([0-9.]+)x", out) > 0
    assert ratio(r"rewarm train_loop\s+[0-9,]+\s+([0-9.]+)%", out) > 0
    assert ratio(r"rewarm plan estimates ([0-9.]+) GB", out) > 0
    # Where the step's time goes besides the model: each share printed, and below the whole step.
    shares = [float(s) for s in re.findall(r"(?:reading the batch|logging the step) [0-9.]+ ms \(([0-9.]+)%\)", out)]
    assert len(shares) == 2 and all(0 <= s < 100 for s in shares)


@pytest.mark.slow
def test_bench_prepare_prints_its_ratios_and_keeps_the_figures(tmp_path):
    out = bench("bench_prepare.py", "--documents", "300", "--repeats", "1", "--results", str(tmp_path))
    assert ratio(r"prepare, 2 workers vs 1: ([0-9.]+)x", out) > 0
    assert ratio(r"prepare is ([0-9.]+)x faster", out) > 0
    assert ratio(r"2 parts at once, 1 worker each\s+2\s+[0-9,]+\s+([0-9.]+) of encode_batch", out) > 0
    assert ratio(r"reader alone .*?([0-9]+) M characters/s", out) > 0
    assert ratio(r"297B tokens on 8 nodes x 64 cores .*: about ([0-9.]+) h", out) > 0
    assert (tmp_path / "prepare.json").is_file()


@pytest.mark.slow
def test_bench_harness_prints_scores_per_batch_size():
    out = bench("bench_harness.py", "--batch-sizes", "1,8", "--limit", "8")
    assert ratio(r"\n\s+8\s+[0-9.]+\s+([0-9.]+)\s", out) > 0
    assert re.search(r"\n\s+1\s+.*scores identical: True", out)  # the reference against itself
    assert ratio(r"rewarm benchmark job: ([0-9.]+) s", out) > 0


@pytest.mark.slow
def test_bench_long_record_prints_memory_whole_and_in_pieces():
    out = bench("bench_long_record.py", "--million-chars", "2.5")
    assert ratio(r"peak memory, pieces vs whole: ([0-9.]+)x", out) > 0
    assert "ids identical: True" in out


def test_gpu_check_runs_every_section_in_its_cpu_mode(tmp_path):
    """benchmarks/gpu_check.py, the one prepared GPU check, in its reduced CPU mode: every section runs
    and writes its figures, so that the script cannot rot between the sessions that have a GPU."""
    import json

    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--cpu", "--out", str(out)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert report["mode"] == "cpu" and set(sections) == {"train_fp16", "train_bf16", "trainer", "cold_read", "evaluate",
                                                         "fsdp_fp16", "sigterm", "lm_eval"}
    assert not [name for name, found in sections.items() if "error" in found]
    for name in ("train_fp16", "train_bf16"):
        assert sections[name]["tokens_per_s"] > 0 and 0 < sections[name]["mfu"] < 1 and sections[name]["graphs"] == 0
    assert sections["trainer"]["rewarm_over_trainer"] > 0 and 0 < sections["cold_read"]["share_of_a_step"]
    # The CPU size: d 64, 2 layers, vocabulary 512, 64 tokens, an evaluation batch of 16 (GPT-NeoX's count by hand).
    d, layers, vocab, seq, batch = 64, 2, 512, 64, 16
    parameters = layers * (12 * d * d + 13 * d) + 2 * d + 2 * vocab * d
    assert sections["evaluate"]["plan_eval_memory_gb"] == pytest.approx((4 * parameters + batch * seq * (24 * d + 10 * vocab)) / 1e9)
    # FSDP: the loss of step 3 (1-based) made infinite is an fp16 overflow: skipped, and the run goes on.
    assert sections["fsdp_fp16"]["skipped_steps"] == [3] and sections["fsdp_fp16"]["final_loss"] > 0
    # SIGTERM in step 4, before the evaluation at its end: saved at 4, and the resumed run is the uninterrupted one.
    sigterm = sections["sigterm"]
    assert sigterm["exit_code"] == 143 and sigterm["saved_at_step"] == 4 and sigterm["resumed"] == sigterm["whole"]
    assert sections["lm_eval"]["finite"] and all(score < 0 for score in sections["lm_eval"]["loglikelihoods"])


def test_gpu_wheels_lists_what_the_gpu_image_lacks():
    """scripts/gpu_wheels.py: the packages the GPU check needs beyond the GPU machine's image, pinned to
    the versions installed here; torch and transformers come with the image."""
    from importlib.metadata import version

    listed = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_wheels.py"), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    pins = dict(line.split("==") for line in listed)
    assert pins["jsonschema"] == version("jsonschema") and pins["lm-eval"] == version("lm_eval") and pins["filelock"] == version("filelock")
    assert "torch" not in pins and "transformers" not in pins and "numpy" not in pins
