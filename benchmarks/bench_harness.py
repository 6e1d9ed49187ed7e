"""The `benchmark` stage (LM Evaluation Harness) on the demo's tasks: do its scores move with the batch
size, and what does a job cost? Measured side by side in one run, on one model.

Prints, per batch size: seconds for the harness's run, examples per second, and each metric's largest
relative difference from batch size 1 (0 means bit-identical); then the time of a whole `rewarm
benchmark` job on the same model (a new process: it pays the imports, as every job does).

    python benchmarks/bench_harness.py [--model checkpoints/base/final --tasks data/tasks] [--batch-sizes 1,4,16,64]

Without --model: a fresh demo-shaped model (params.yaml's `model`, a BPE trained on demo text), untrained.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_model(work: Path, params: Path) -> Path:
    """A demo-shaped model, untrained, with its tokenizer (what `rewarm select` makes of a scratch checkpoint)."""
    from rewarm import checkpoints
    from rewarm import config as cfg
    from rewarm import grid
    from rewarm.data import demo
    from rewarm.data import tokenizer as tok

    config = grid.load(params)
    tokenizer_dir = work / "tokenizer"
    texts = (r["text"] for r in demo.generate_records("upstream", 2000, seed=0))
    tok.save_trained(tok.train_bpe(texts, vocab_size=config.tokenizer.vocab_size), tokenizer_dir)
    out = work / "model"
    checkpoints.init_scratch(cfg.ScratchCheckpoint(type="scratch", seed=0), config.model, tokenizer_dir, out)
    return out


def relative_differences(reference: dict, other: dict) -> dict[str, float]:
    """task/metric -> |other - reference| / |reference| (0 where both are 0)."""
    out = {}
    for task, entry in reference["tasks"].items():
        for metric, value in entry["metrics"].items():
            theirs = other["tasks"][task]["metrics"][metric]
            out[f"{task}/{metric}"] = abs(theirs - value) / abs(value) if value else abs(theirs)
    return out


def job_seconds(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rewarm", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="configuration (default: the demo's)")
    parser.add_argument("--model", help="a model directory (default: a fresh demo-shaped one)")
    parser.add_argument("--tasks", help="the demo tasks' directory (default: written fresh with `rewarm tasks`)")
    parser.add_argument("--batch-sizes", default="1,4,16,64", help="comma-separated (default: 1,4,16,64; the first is the reference)")
    parser.add_argument("--limit", type=int, help="examples per task (default: every one)")
    args = parser.parse_args()

    import dataclasses

    import torch

    from rewarm import benchmark
    from rewarm import grid

    torch.set_num_threads(1)  # as the pipeline's jobs run (threads: 1)
    work = Path(tempfile.mkdtemp(prefix="bench-harness-"))
    params = Path(args.params).resolve()
    model = Path(args.model).resolve() if args.model else build_model(work, params)
    config = grid.load(params)
    config = dataclasses.replace(config, benchmark=dataclasses.replace(config.benchmark, limit=args.limit))
    tasks = Path(args.tasks).resolve() if args.tasks else work / "tasks"
    if not args.tasks:
        benchmark.write_demo_tasks(config, tasks)

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    results, seconds = {}, {}
    benchmark.run_benchmark(config, model, tasks, batch_size=sizes[0])  # warm: imports, dataset cache
    for size in sizes:
        start = time.perf_counter()
        results[size] = benchmark.run_benchmark(config, model, tasks, batch_size=size)
        seconds[size] = time.perf_counter() - start
    examples = sum(t["examples"] for t in results[sizes[0]]["tasks"].values())
    print(f"model {model}; {examples} examples over {', '.join(results[sizes[0]]['tasks'])}; "
          f"lm-eval {results[sizes[0]]['harness']['version']}, {results[sizes[0]]['dtype']} on {results[sizes[0]]['device']}")
    print(f"{'batch size':>10}  {'seconds':>8}  {'examples/s':>10}  largest relative difference from batch size {sizes[0]}")
    for size in sizes:
        differences = relative_differences(results[sizes[0]], results[size])
        worst = max(differences, key=differences.get)
        print(f"{size:>10}  {seconds[size]:>8.2f}  {examples / seconds[size]:>10.1f}  "
              f"{differences[worst]:.2e} ({worst}); scores identical: {results[size]['tasks'] == results[sizes[0]]['tasks']}")

    # A whole job in a new process, as the pipeline runs it: what benchmarking adds per model.
    bench = job_seconds(["benchmark", "--params", str(params), "--model", str(model), "--tasks", str(tasks),
                         "--threads", "1", "--out", str(work / "benchmark.json")], cwd=work)
    print(f"rewarm benchmark job: {bench:.1f} s (imports, model, {examples} examples)")


if __name__ == "__main__":
    main()
