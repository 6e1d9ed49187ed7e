"""The GPU check: what the GPU path must show, measured in one short run and written to one JSON file.

    python benchmarks/gpu_check.py --out gpu_check.json          # on one GPU (H100, H200): a few minutes
    python benchmarks/gpu_check.py --cpu --out gpu_check.json    # reduced, on the CPU (the test suite runs it)

Nothing comes from the hub: a randomly initialised model of Pythia-410M's shape (the demo's under
--cpu) and random token shards made on the spot (the speed and memory do not depend on the values).
Beyond torch, transformers, numpy, pyarrow, PyYAML, tqdm and filelock it imports jsonschema (the
shards' manifests), and lm_eval for its section when it is there: `scripts/gpu_wheels.sh` downloads
what a GPU machine without network lacks. DVCLive is left out (it imports all of DVC): the loops run
with `live=False`; its cost per step is `bench_train.py`'s to measure, on any machine.

Sections, each written with its figures, or with its error (the script then exits 1):
  train_fp16  the papers' path: fp16 with dynamic loss scaling, torch.compile, the paper's micro-batch
              (6) with gradient accumulation: steady tokens/s, MFU, peak memory against `rewarm plan`,
              graphs compiled and graph breaks, steps skipped for overflow (loss-scale changes)
  train_bf16  the same in bf16
  trainer     transformers.Trainer on the same model, batch and micro-batch in bf16 (fp32 on the CPU):
              rewarm's loop against it (goal: at least 1.2x; and 40% MFU for rewarm at Pythia-410M)
  cold_read   one step's batch read with the shards dropped from the page cache, as a share of a step
  evaluate    forward passes at `plan.eval_batch`'s batch under bf16 autocast: peak memory against
              `plan.eval_memory`, tokens/s
  fsdp_fp16   FSDP on one rank, fp16, 4 micro-batches a step: the memory allocated at each micro-batch
              (flat: each one's gradients are reduce-scattered at once), and a step whose loss is made
              infinite skipped by the loss scaler, the run going on
  sigterm     SIGTERM during the step before an evaluation, then the resumed run: its final losses
              against the uninterrupted run's (equal on the CPU; within rounding on a GPU)
  lm_eval     the LM Evaluation Harness's model wrapper (HFLM) scoring texts with the model (rolling
              loglikelihoods, finite), on the device
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train  # noqa: E402  (the shards, the model and the clocks, shared with bench_train.py)

SIZES = {
    "gpu": dict(bench_train.SIZES["pythia-410m"], micro=6, batch=24, steps=30),  # micro 6: config/paper.yaml's
    # a smaller model than the demo's: the CPU's fp16 is emulated, and the test suite runs this
    "cpu": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, seq_len=64, vocab=512, micro=2, batch=4, steps=5),
}


class Check:
    """The run's settings, its working directory, and what the sections found."""

    def __init__(self, cpu: bool, work: Path, peak_tflops: float):
        self.device = "cpu" if cpu else "cuda"
        self.size = SIZES["cpu" if cpu else "gpu"]
        self.work = work
        self.peak = peak_tflops * 1e12
        self.results: dict = {}
        self.split = bench_train.make_shards(work / "shards", self.size["batch"] * (self.size["steps"] + 2) * 2,
                                             self.size["seq_len"], self.size["vocab"])

    def section(self, name: str, function) -> None:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            found = function(self)
        except BaseException as error:  # noqa: BLE001 - recorded, and the check goes on to the next section
            if isinstance(error, KeyboardInterrupt):
                raise
            found = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        found["seconds"] = round(time.perf_counter() - start, 2)
        self.results[name] = found
        print(json.dumps({k: v for k, v in found.items() if k != "traceback"}, default=str), flush=True)

    def run(self, precision: str, steps: int | None = None, compile: bool = False, **extra):
        from rewarm import config as cfg

        size, steps = self.size, steps or self.size["steps"]
        fields = dict(tokens=steps * size["batch"] * size["seq_len"], batch_sequences=size["batch"],
                      micro_batch_sequences=size["micro"], max_lr=3e-4, warmup_fraction=0.01, eval_every=10**9,
                      eval_tokens=size["seq_len"], save_every=10**9, device=self.device, precision=precision, compile=compile)
        return cfg.TrainConfig(**{**fields, **extra})

    def data(self):
        from rewarm.data.shards import ShardReader
        from rewarm.train import Data

        reader = ShardReader(self.split, verify=False)
        return Data(train=reader, val={"check": reader})

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.device == "cuda" else None


def parameter_count(size: dict) -> tuple[int, int]:
    """(all parameters, those that cost compute per token: all but the input embedding)."""
    from rewarm import plan

    model = model_config(size)
    total = plan.parameter_count(model, size["vocab"])
    return total, total - size["vocab"] * size["hidden_size"]


def model_config(size: dict):
    from rewarm import config as cfg

    return cfg.ModelConfig(hidden_size=size["hidden_size"], num_layers=size["num_layers"], num_heads=size["num_heads"],
                           intermediate_size=size["intermediate_size"], max_position_embeddings=size["seq_len"])


def train(check: Check, precision: str) -> dict:
    """rewarm's loop on the paper's path: tokens/s from the end of step 1, MFU, peak memory, compilation."""
    from torch._dynamo.utils import counters

    from rewarm import plan
    from rewarm.train import train_loop

    size = check.size
    compile_ = check.device == "cuda"  # torch.compile on the GPU (the CPU mode keeps the test suite quick)
    run = check.run(precision, compile=compile_)
    model = bench_train.build_model(size)
    clock = bench_train.StepClock(check.device)
    skipped = []
    counters.clear()
    check.reset_peak()

    def on_step(step, _model, history):
        clock.tick(step)
        skipped[:] = [row["step"] for row in history.steps if row.get("skipped")]

    work = check.work / f"train-{precision}"
    train_loop(model, run, check.data(), work / "out", work / "state", "check", on_step=on_step, label=f"check-{precision}",
               live=False)
    rate = clock.rate(size["batch"] * size["seq_len"])
    total, compute = parameter_count(size)
    peak = check.peak_memory()
    estimate = plan.peak_memory(total, model_config(size), size["vocab"], size["seq_len"], size["micro"])
    return {"precision": precision, "compile": compile_, "steps": size["steps"], "micro_batch": size["micro"],
            "accumulation": size["batch"] // size["micro"], "tokens_per_s": round(rate),
            "step_seconds": size["batch"] * size["seq_len"] / rate, "mfu": 6 * compute * rate / check.peak,
            "peak_memory_gb": peak / 1e9 if peak else None, "plan_memory_gb": estimate / 1e9,
            "measured_over_plan": peak / estimate if peak else None,
            "graphs": counters["stats"].get("unique_graphs", 0), "graph_breaks": sum(counters["graph_break"].values()),
            "skipped_steps": skipped}


def trainer(check: Check) -> dict:
    """transformers.Trainer on the same model, batch and micro-batch, against rewarm's bf16 loop."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    size = check.size
    rows = size["batch"] * size["steps"]
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, size["vocab"], size=(rows, size["seq_len"]), dtype=np.int64))

    class Rows(torch.utils.data.Dataset):  # no `datasets`: the GPU image does not have it
        def __len__(self):
            return rows

        def __getitem__(self, index):
            return {"input_ids": tokens[index], "labels": tokens[index]}

    args = TrainingArguments(
        output_dir=str(check.work / "trainer"), per_device_train_batch_size=size["micro"],
        gradient_accumulation_steps=size["batch"] // size["micro"], max_steps=size["steps"], learning_rate=3e-4,
        lr_scheduler_type="cosine", warmup_steps=1, weight_decay=0.01, adam_beta2=0.95, max_grad_norm=1.0,
        logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=check.device == "cpu", bf16=check.device == "cuda",
        dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    clock = bench_train.StepClock(check.device)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick(state.global_step)

    Trainer(model=bench_train.build_model(size), args=args, train_dataset=Rows(), callbacks=[Clock()]).train()
    theirs = clock.rate(size["batch"] * size["seq_len"])
    # Against rewarm's loop in the same arithmetic: bf16 on the GPU; float32 on the CPU, where bf16 is emulated.
    precision = "bf16" if check.device == "cuda" else "fp32"
    ours = (check.results.get("train_bf16") or {}).get("tokens_per_s") if precision == "bf16" else train(check, "fp32")["tokens_per_s"]
    return {"precision": precision, "tokens_per_s": round(theirs), "rewarm_tokens_per_s": ours,
            "rewarm_over_trainer": ours / theirs if ours else None, "goal": 1.2}


def cold_read(check: Check) -> dict:
    """One step's batch with the shards out of the page cache (posix_fadvise DONTNEED), as a share of a step."""
    from rewarm.config import Plan
    from rewarm.data.shards import ShardReader, ShuffledStream
    from rewarm.train import Data, step_batch

    for path in check.split.glob("*.arrow"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    size = check.size
    run = check.run("fp32")
    plan = Plan.of(run, size["seq_len"], 0.0, 1)
    start = time.perf_counter()
    reader = ShardReader(check.split, verify=False)
    batch = step_batch(Data(train=reader, val={}), plan, run, (ShuffledStream(reader, 0), None), 3, 0, 1)
    seconds = time.perf_counter() - start
    step = check.results.get("train_bf16", {}).get("step_seconds")
    return {"sequences": int(batch.shape[0]), "read_seconds": seconds, "share_of_a_step": seconds / step if step else None}


def evaluate(check: Check) -> dict:
    """Forward passes at the evaluation batch `plan.eval_batch` chooses for this GPU, against plan.eval_memory."""
    from rewarm import plan
    from rewarm.evaluate import mean_loss
    from rewarm.runtime import autocast_for

    size = check.size
    total, compute = parameter_count(size)
    device = torch.device(check.device)
    if check.device == "cuda":
        batch = plan.eval_batch(total, size["hidden_size"], size["vocab"], size["seq_len"], torch.cuda.get_device_properties(0).total_memory)
    else:
        batch = 16
    model = bench_train.build_model(size).to(device)
    reader = check.data().train
    autocast = autocast_for("bf16", device)
    mean_loss(model, reader, batch, batch, device, autocast)  # warm-up
    check.reset_peak()
    start = time.perf_counter()
    loss = mean_loss(model, reader, 2 * batch, batch, device, autocast)
    check.synchronize()
    seconds = time.perf_counter() - start
    peak = check.peak_memory()
    estimate = plan.eval_memory(total, size["hidden_size"], size["vocab"], size["seq_len"], batch)
    return {"batch": batch, "loss": loss, "tokens_per_s": round(2 * batch * size["seq_len"] / seconds),
            "peak_memory_gb": peak / 1e9 if peak else None, "plan_eval_memory_gb": estimate / 1e9,
            "measured_over_plan": peak / estimate if peak else None}


def fsdp(check: Check) -> dict:
    """FSDP over one process in fp16: memory at each micro-batch, and an overflowing step skipped."""
    import torch.distributed as dist

    from rewarm.runtime import setup_device
    from rewarm.train import train_loop

    size = check.size
    setup_device(check.device, group=True)
    try:
        micro = max(1, size["micro"] // 2)
        run = check.run("fp16", steps=4, micro_batch_sequences=micro, batch_sequences=4 * micro, parallel="fsdp")
        model = bench_train.build_model(size)
        allocated, calls, skipped = [], {"n": 0}, []

        def before(module, args, kwargs):  # each training micro-batch, before its forward pass
            if module.training:
                allocated.append(torch.cuda.memory_allocated() if check.device == "cuda" else None)

        def overflow(module, args, kwargs, output):  # step 2's loss made infinite: an fp16 overflow
            if module.training:
                if calls["n"] // 4 == 2:
                    output.loss = output.loss * float("inf")
                calls["n"] += 1
            return output

        model.register_forward_pre_hook(before, with_kwargs=True)
        model.register_forward_hook(overflow, with_kwargs=True)
        work = check.work / "fsdp"
        # Under FSDP on_step comes at the snapshot steps only: the last one, with the run's history.
        final = train_loop(model, run, check.data(), work / "out", work / "state", "check", label="check-fsdp", live=False,
                           snapshot_steps=frozenset({4}), on_step=lambda step, _m, history: skipped.__setitem__(
                               slice(None), [r["step"] for r in history.steps if r.get("skipped")]))
    finally:
        dist.destroy_process_group()
    steps = [allocated[i:i + 4] for i in range(0, len(allocated), 4)]
    growth = [(s[-1] - s[1]) / 1e9 for s in steps if None not in s]
    return {"micro_batches_per_step": 4, "allocated_gb_per_micro_batch": [[a / 1e9 if a is not None else None for a in s] for s in steps],
            "growth_gb_within_a_step": growth, "skipped_steps": skipped, "expected_skipped": [3],
            "final_loss": final.get("val/check/loss")}


def sigterm(check: Check) -> dict:
    """SIGTERM during the step before an evaluation; the resumed run against the uninterrupted one."""
    from rewarm.train import train_loop

    size = check.size
    run = check.run("bf16" if check.device == "cuda" else "fp32", steps=8, eval_every=4)
    whole = train_loop(bench_train.build_model(size), run, check.data(), check.work / "whole/out", check.work / "whole/state",
                       "check", label="check-whole", live=False)
    model = bench_train.build_model(size)
    calls = {"n": 0}
    per_step = size["batch"] // size["micro"]

    def stop(module, args, kwargs):  # the first micro-batch of step 3 (0-based): the evaluation comes after step 4
        if module.training:
            if calls["n"] == 3 * per_step:
                os.kill(os.getpid(), signal.SIGTERM)
            calls["n"] += 1

    model.register_forward_pre_hook(stop, with_kwargs=True)
    handler = signal.getsignal(signal.SIGTERM)
    stopped = None
    try:
        train_loop(model, run, check.data(), check.work / "cut/out", check.work / "cut/state", "check", label="check-cut", live=False)
    except SystemExit as exit_:
        stopped = exit_.code
    finally:
        signal.signal(signal.SIGTERM, handler)
    saved = json.loads((check.work / "cut/state/state.json").read_text())["step"]
    resumed = train_loop(bench_train.build_model(size), run, check.data(), check.work / "cut/out", check.work / "cut/state",
                         "check", label="check-resumed", live=False)
    keys = [k for k in whole if k.startswith("val/") and k.endswith("/loss")]
    differences = {k: abs(resumed[k] - whole[k]) / abs(whole[k]) for k in keys}
    return {"exit_code": stopped, "saved_at_step": saved, "whole": {k: whole[k] for k in keys},
            "resumed": {k: resumed[k] for k in keys}, "relative_difference": differences}


def lm_eval_smoke(check: Check) -> dict:
    """The harness's HFLM around the model (with a small tokenizer made here) scoring two texts."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["the model reads a sentence of plain words and scores it", "continual pre-training warms the model up again"]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts * 4, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<|endoftext|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", unk_token="<unk>")
    model = bench_train.build_model(check.size).to(check.device).eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2, device=check.device)
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=i) for i, text in enumerate(texts)]
    scores = [float(score[0] if isinstance(score, tuple) else score) for score in lm.loglikelihood_rolling(requests)]
    return {"loglikelihoods": scores, "finite": all(math.isfinite(s) for s in scores)}


SECTIONS = {
    "train_fp16": lambda check: train(check, "fp16"),
    "train_bf16": lambda check: train(check, "bf16"),
    "trainer": trainer,
    "cold_read": cold_read,
    "evaluate": evaluate,
    "fsdp_fp16": fsdp,
    "sigterm": sigterm,
    "lm_eval": lm_eval_smoke,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the reduced check on the CPU (the demo's model size, fewer steps)")
    parser.add_argument("--out", default="gpu_check.json", help="where to write the results (default: gpu_check.json)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense TFLOP/s for MFU (default: 989, an H100's or H200's bf16; on the CPU: the measured matmul rate)")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run these sections only")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --cpu for the reduced check")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = "cpu" if args.cpu else "cuda"
    peak = args.peak_tflops or (989.0 if device == "cuda" else bench_train.matmul_rate("cpu") / 1e12)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        check = Check(args.cpu, Path(tmp), peak)
        for name, function in SECTIONS.items():
            if not args.only or name in args.only:
                check.section(name, function)
    import transformers

    report = {"mode": device, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": transformers.__version__, "peak_tflops": peak,
              "seconds": round(time.perf_counter() - start, 1), "sections": check.results}
    with contextlib.suppress(FileNotFoundError):
        Path(args.out).unlink()
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    failed = [name for name, found in check.results.items() if "error" in found]
    print(f"written {args.out} in {report['seconds']} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
