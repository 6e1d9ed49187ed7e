"""Perplexity on held-out shards: mean token loss without gradients, batched, on the device the
configuration chooses (a GPU when there is one, in its precision: bf16 autocast where it has it)."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from rewarm import config as cfg
from rewarm.data.shards import ShardReader

log = logging.getLogger(__name__)

CPU_BATCH = 16
"""Sequences per forward pass on the CPU, when not given."""


def pick_device(choice: str) -> torch.device:
    """The device of `train.device`: auto (a GPU when there is one), cuda (refused without one), or cpu."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise cfg.ConfigError("device: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def resolve_precision(choice: str, device: torch.device) -> str:
    """The arithmetic a run uses: bf16 where the GPU has it, fp16 (with loss scaling) on older GPUs,
    fp32 on the CPU; an explicit choice is kept (fp16 on the CPU is emulated, and said so)."""
    if choice == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "fp16" and device.type != "cuda":
        log.warning("precision fp16 on the CPU is emulated (CPU float16 autocast and loss scaling): slow, for tests; "
                    "GPUs run it natively (Gupta et al. 2023 trained in fp16)")
    return choice


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a precision (None for fp32)."""
    if precision == "fp32":
        return None
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def mean_loss(model, reader: ShardReader, sequences: int, micro_batch: int, device: torch.device, autocast=None) -> float:
    """Mean next-token loss over the first `sequences` sequences of `reader`.

    Every sequence has the same length, so the mean of per-batch means weighted by batch
    size is the mean over all tokens, whatever the batch size.
    """
    sequences = min(sequences, len(reader))
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, sequences, micro_batch):
        count = min(micro_batch, sequences - start)
        batch = torch.from_numpy(np.stack([reader[i] for i in range(start, start + count)]).astype(np.int64)).to(device)
        with autocast or nullcontext():
            loss = model(input_ids=batch, labels=batch).loss
        total += float(loss) * count
    model.train(was_training)
    return total / sequences


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def evaluate_model(model_dir, val_dirs: dict, micro_batch: int | None = None, device: str = "auto",
                   precision: str = "auto") -> dict:
    """The `evaluate` stage: loss and perplexity of a model directory on every sequence of each
    validation split (not the in-training samples), batched, without gradients. `device` and
    `precision` are the configuration's choices (train.device, train.precision); `micro_batch`
    (sequences per forward pass) defaults to what fills a GPU (`plan.eval_batch`), 16 on the CPU."""
    from tqdm import tqdm

    from rewarm.checkpoints import load_model
    from rewarm.data import tokenizer as tok

    where = pick_device(device)
    if where.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    arithmetic = resolve_precision(precision, where)
    model = load_model(model_dir, where)
    fingerprint = tok.fingerprint(tok.load(model_dir))
    results = {}
    for name, path in tqdm(sorted(val_dirs.items()), desc=f"evaluate {model_dir}", unit="split"):
        reader = ShardReader(path, tokenizer_fingerprint=fingerprint)
        batch = micro_batch or (device_batch(model, reader.seq_len, where) if where.type == "cuda" else CPU_BATCH)
        start = time.perf_counter()
        loss = mean_loss(model, reader, len(reader), batch, where, autocast_for(arithmetic, where))
        seconds = time.perf_counter() - start
        tokens = len(reader) * reader.seq_len
        log.info("%s: %d tokens on %s (%s, %d sequences per pass) in %.1f s: %.0f tokens/s",
                 name, tokens, where, arithmetic, batch, seconds, tokens / max(seconds, 1e-9))
        results[name] = {"loss": loss, "ppl": perplexity(loss), "sequences": len(reader), "tokens": tokens}
    return results


def device_batch(model, seq_len: int, device: torch.device) -> int:
    """Sequences per forward pass that fill the GPU: `plan.eval_batch` on its total memory."""
    from rewarm import plan

    conf = model.config
    total = torch.cuda.get_device_properties(device).total_memory
    parameters = sum(p.numel() for p in model.parameters())
    return plan.eval_batch(parameters, conf.hidden_size, conf.vocab_size, seq_len, total)
