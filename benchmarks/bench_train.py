"""Benchmark of the training loop, measured side by side in one run on the same model, batch and data.

Prints training tokens/s of rewarm's loop (`rewarm.train.train_loop`) against a
`transformers.Trainer` loop on the same model, global batch, micro-batch and sequences
(goal: at least 1.2x), and model FLOPs utilisation:
    MFU = 6 x parameters x tokens/s / (the machine's measured dense matmul rate, or --peak-tflops)
On a GPU it also runs a Pythia-410M-shaped model in bf16 (goal: at least 40% MFU on one H100,
with --peak-tflops 989 for the H100's dense bf16 peak), and prints the GPU memory rewarm's loop
peaked at against `rewarm plan`'s estimate for the same model and micro-batch; where there is no
GPU it says so. A few hundred steps of a paper-scale cell's shape, with its figures against plan:

    python benchmarks/bench_train.py --size pythia-410m --steps 300 --peak-tflops 989

Token values are random: the loop's speed and memory do not depend on them.

    python benchmarks/bench_train.py [--steps 20] [--size demo|pythia-410m]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {
    # the demo's tiny GPT-NeoX, at the demo's sequence length and batch
    "demo": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, seq_len=128, vocab=4096, batch=16, micro=16),
    # Pythia-410M's published dimensions (Biderman et al. 2023), at its context length
    "pythia-410m": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, seq_len=2048, vocab=50304,
                        batch=16, micro=8),
}


def make_shards(root: Path, rows: int, seq_len: int, vocab: int) -> Path:
    """Random token sequences as a prepared split (the loop's speed does not depend on the text)."""
    from rewarm.data.packing import SCHEMA_VERSION, ShardWriter
    from rewarm.io import file_sha256

    root.mkdir(parents=True)
    tokens = np.random.default_rng(0).integers(0, vocab, size=(rows, seq_len), dtype=np.uint16)
    writer = ShardWriter(root, seq_len, np.uint16, 4096)
    writer.add(tokens)
    files = writer.close()
    manifest = {"schema_version": SCHEMA_VERSION, "tokenizer": {"fingerprint": "bench"}, "seq_len": seq_len,
                "shards": [{"file": n, "rows": r, "bytes": (root / n).stat().st_size, "sha256": file_sha256(root / n)} for n, r in files]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def build_model(size: dict):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=size["vocab"], hidden_size=size["hidden_size"], num_hidden_layers=size["num_layers"],
                           num_attention_heads=size["num_heads"], intermediate_size=size["intermediate_size"],
                           max_position_embeddings=size["seq_len"], attn_implementation="sdpa")
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).float()


def run_rewarm(size: dict, steps: int, work: Path, device: str) -> tuple[float, int | None]:
    """Tokens/s of rewarm's loop, and the peak GPU memory it allocated (None on CPU)."""
    from rewarm import config as cfg
    from rewarm.data.shards import ShardReader
    from rewarm.train import Data, train_loop

    rows = size["batch"] * steps
    split = make_shards(work / "shards", rows, size["seq_len"], size["vocab"])
    run = cfg.TrainConfig(tokens=rows * size["seq_len"], batch_sequences=size["batch"], micro_batch_sequences=size["micro"],
                          max_lr=3e-4, warmup_fraction=0.01, eval_every=10**9, eval_tokens=size["seq_len"], save_every=10**9,
                          device=device)
    reader = ShardReader(split, verify=False)
    model = build_model(size)
    ends = StepClock(device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    train_loop(model, run, Data(train=reader, val={"bench": reader}), work / "run", work / "state", "bench",
               on_step=lambda step, _model, _history: ends.tick(step), label="rewarm")
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return ends.rate(size["batch"] * size["seq_len"]), peak


def loop_overheads(size: dict, steps: int, work: Path) -> dict[str, float]:
    """Seconds per step of what the loop does besides forward, backward and the update, each timed
    alone over `steps` steps: reading the step's batch from the shards, and logging the step
    (DVCLive's per-step lr and train loss; evaluation steps, which also write the curves and
    DVCLive's summary, are every eval_every steps and are left out)."""
    from rewarm import config as cfg
    from rewarm.data.shards import ShardReader, ShuffledStream
    from rewarm.config import Plan
    from rewarm.metrics import History, MetricsLog
    from rewarm.train import Data, step_batch

    split = make_shards(work / "shards", size["batch"] * steps, size["seq_len"], size["vocab"])
    reader = ShardReader(split, verify=False)
    run = cfg.TrainConfig(tokens=size["batch"] * steps * size["seq_len"], batch_sequences=size["batch"],
                          micro_batch_sequences=size["micro"])
    plan = Plan.of(run, size["seq_len"], 0.0, 1)
    streams, data = (ShuffledStream(reader, 0), None), Data(train=reader, val={})
    start = time.perf_counter()
    for step in range(steps):
        step_batch(data, plan, run, streams, step, 0, 1)
    batch = (time.perf_counter() - start) / steps
    history = History()
    metrics = MetricsLog(work / "log", history)
    start = time.perf_counter()
    for step in range(steps):
        row = {"step": step + 1, "lr": 1e-3, "train_loss": 2.0}
        history.steps.append(row)
        metrics.log_step(row, None)
    logging = (time.perf_counter() - start) / steps
    metrics.close()
    return {"reading the batch": batch, "logging the step": logging}


def planned_memory(size: dict) -> int:
    """`rewarm plan`'s peak-memory estimate for this model and micro-batch."""
    from rewarm import config as cfg
    from rewarm import plan

    model = cfg.ModelConfig(hidden_size=size["hidden_size"], num_layers=size["num_layers"], num_heads=size["num_heads"],
                            intermediate_size=size["intermediate_size"], max_position_embeddings=size["seq_len"])
    return plan.peak_memory(plan.parameter_count(model, size["vocab"]), model, size["vocab"], size["seq_len"], size["micro"])


class StepClock:
    """End times of optimizer steps; the rate is measured from the end of step 1 to the end of
    the last step, so start-up (and the first, slow step) counts for neither loop."""

    def __init__(self, device: str):
        self.device = device
        self.times: dict[int, float] = {}

    def tick(self, step: int) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.times[step] = time.perf_counter()

    def rate(self, tokens_per_step: int) -> float:
        last = max(self.times)
        return (last - 1) * tokens_per_step / (self.times[last] - self.times[1])


def run_trainer(size: dict, steps: int, work: Path, device: str) -> float:
    import datasets
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = size["batch"] * steps
    tokens = np.random.default_rng(0).integers(0, size["vocab"], size=(rows, size["seq_len"]), dtype=np.int64)
    dataset = datasets.Dataset.from_dict({"input_ids": tokens.tolist(), "labels": tokens.tolist()}).with_format("torch")
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=size["micro"],
        gradient_accumulation_steps=size["batch"] // size["micro"], max_steps=steps, learning_rate=3e-4,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 100), weight_decay=0.01, adam_beta2=0.95,
        max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=device == "cpu",
        bf16=device == "cuda", dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    ends = StepClock(device)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.tick(state.global_step)

    trainer = Trainer(model=build_model(size), args=args, train_dataset=dataset, callbacks=[Clock()])
    trainer.train()
    return ends.rate(size["batch"] * size["seq_len"])


def matmul_rate(device: str) -> float:
    """Measured dense matmul FLOP/s: fp32 on CPU, bf16 on GPU."""
    n = 2048 if device == "cpu" else 8192
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    repeats = 5 if device == "cpu" else 50
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def parameters(size: dict) -> int:
    """Parameters that cost compute per token: all but the input embedding."""
    model = build_model(size)
    return sum(p.numel() for p in model.parameters()) - model.gpt_neox.embed_in.weight.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per loop (default: 20)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="model size (default: demo on CPU, pythia-410m on GPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="use this peak instead of the measured matmul rate")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        print("no GPU here: measuring on the CPU (float32); the Pythia-410M bf16 figures need a CUDA device")
    size_name = args.size or ("pythia-410m" if device == "cuda" else "demo")
    size = SIZES[size_name]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        # Alternate and keep the best of two, so that neither loop is favoured by warm caches.
        ours, memory = max(run_rewarm(size, args.steps, work / f"r{i}", device) for i in range(2))
        theirs = max(run_trainer(size, args.steps, work / f"t{i}", device) for i in range(2))
        overheads = loop_overheads(size, max(args.steps, 50), work / "overheads")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else matmul_rate(device)
    n = parameters(size)
    print(f"model {size_name}: {n / 1e6:.1f} M non-embedding-input parameters, batch {size['batch']} x {size['seq_len']} tokens "
          f"(micro-batch {size['micro']}), {args.steps} steps, {device}, {torch.get_num_threads()} threads")
    print(f"{'loop':28s} {'tokens/s':>12s} {'MFU':>7s}")
    for name, rate in (("rewarm train_loop", ours), ("transformers.Trainer", theirs)):
        print(f"{name:28s} {rate:12,.0f} {6 * n * rate / peak:7.1%}")
    print(f"rewarm / Trainer: {ours / theirs:.2f}x   (peak used for MFU: {peak / 1e12:.2f} TFLOP/s, "
          f"{'given' if args.peak_tflops else 'measured matmul'})")
    step_seconds = size["batch"] * size["seq_len"] / ours
    print(f"per step of rewarm's loop ({step_seconds * 1e3:.1f} ms), besides forward, backward and update: " + ", ".join(
        f"{name} {seconds * 1e3:.2f} ms ({seconds / step_seconds:.1%})" for name, seconds in overheads.items()))
    estimate = planned_memory(size)
    if memory is None:
        print(f"peak GPU memory: not measured on CPU (rewarm plan estimates {estimate / 1e9:.2f} GB on a GPU "
              f"at micro-batch {size['micro']})")
    else:
        print(f"peak GPU memory of rewarm's loop: {memory / 1e9:.2f} GB; rewarm plan estimates {estimate / 1e9:.2f} GB "
              f"at micro-batch {size['micro']} (measured / estimate: {memory / estimate:.2f})")


if __name__ == "__main__":
    main()
