"""The benchmark scripts run and print their side-by-side ratios (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_bench_train_prints_throughput_ratio_mfu_and_planned_memory():
    out = bench("bench_train.py", "--steps", "4")
    assert ratio(r"rewarm / Trainer: ([0-9.]+)x", out) > 0
    assert ratio(r"rewarm train_loop\s+[0-9,]+\s+([0-9.]+)%", out) > 0
    assert ratio(r"rewarm plan estimates ([0-9.]+) GB", out) > 0
    # Where the step's time goes besides the model: each share printed, and below the whole step.
    shares = [float(s) for s in re.findall(r"(?:reading the batch|logging the step) [0-9.]+ ms \(([0-9.]+)%\)", out)]
    assert len(shares) == 2 and all(0 <= s < 100 for s in shares)


def test_bench_prepare_prints_its_ratios_and_keeps_the_figures(tmp_path):
    out = bench("bench_prepare.py", "--documents", "300", "--repeats", "1", "--results", str(tmp_path))
    assert ratio(r"prepare, 2 workers vs 1: ([0-9.]+)x", out) > 0
    assert ratio(r"prepare is ([0-9.]+)x faster", out) > 0
    assert ratio(r"2 parts at once, 1 worker each\s+2\s+[0-9,]+\s+([0-9.]+) of encode_batch", out) > 0
    assert ratio(r"reader alone .*?([0-9]+) M characters/s", out) > 0
    assert ratio(r"297B tokens on 8 nodes x 64 cores .*: about ([0-9.]+) h", out) > 0
    assert (tmp_path / "prepare.json").is_file()


def test_bench_harness_prints_scores_per_batch_size():
    out = bench("bench_harness.py", "--batch-sizes", "1,8", "--limit", "8")
    assert ratio(r"\n\s+8\s+[0-9.]+\s+([0-9.]+)\s", out) > 0
    assert re.search(r"\n\s+1\s+.*scores identical: True", out)  # the reference against itself
    assert ratio(r"rewarm benchmark job: ([0-9.]+) s", out) > 0
