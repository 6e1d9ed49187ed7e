"""Perplexity on held-out shards: mean token loss without gradients, batched, on the device the
configuration chooses (a GPU when there is one, in its precision: bf16 autocast where it has it)."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext

import numpy as np
import torch

from rewarm import plan
from rewarm.checkpoints import check_fits, check_model_dir, load_model, verify_weights
from rewarm.data import tokenizer as tok
from rewarm.data.shards import ShardReader
from rewarm.runtime import autocast_for, pick_device, resolve_precision

log = logging.getLogger(__name__)

CPU_BATCH = 16
"""Sequences per forward pass on the CPU, when not given."""


@torch.no_grad()
def mean_loss(model, reader: ShardReader, sequences: int, micro_batch: int, device: torch.device, autocast=None,
              rank: int = 0, world: int = 1) -> float:
    """Mean next-token loss over the first `sequences` sequences of `reader`.

    Every sequence has the same length, so the mean of per-batch means weighted by batch
    size is the mean over all tokens, whatever the batch size. Under torchrun (`world` > 1, a process
    group) the batches are shared by the processes (batch k on rank k % world) and their sums added
    up: every process runs the same number of forward passes (under FSDP each is a collective), one
    without a batch of its own repeating the first with weight 0.
    """
    sequences = min(sequences, len(reader))
    starts = list(range(0, sequences, micro_batch))
    mine = starts[rank::world]
    was_training = model.training
    model.eval()
    total = 0.0
    for k in range(math.ceil(len(starts) / world)):
        start = mine[k] if k < len(mine) else starts[0]
        count = min(micro_batch, sequences - start)
        batch = torch.from_numpy(np.stack([reader[i] for i in range(start, start + count)]).astype(np.int64)).to(device)
        with autocast or nullcontext():
            # no key/value cache: nothing generates, and at 410M it is about 0.3 GB a sequence
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        total += float(loss) * (count if k < len(mine) else 0)
    model.train(was_training)
    if world > 1:
        import torch.distributed as dist

        summed = torch.tensor(total, dtype=torch.float64, device=device)
        dist.all_reduce(summed)
        total = float(summed)
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

    check_model_dir(model_dir)
    verify_weights(model_dir)  # first: an altered or truncated model is named before anything else is read
    tokenizer = tok.load(model_dir)
    readers = {name: ShardReader(path, tokenizer_fingerprint=tok.fingerprint(tokenizer)) for name, path in sorted(val_dirs.items())}
    for name, reader in readers.items():  # before loading the weights: an IndexError in the forward pass otherwise
        check_fits(model_dir, tokenizer, reader.seq_len, f"the sequences of {val_dirs[name]}")
    where = pick_device(device)
    if where.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    arithmetic = resolve_precision(precision, where)
    model = load_model(model_dir, where, verify=False)
    results = {}
    for name, reader in tqdm(readers.items(), desc=f"evaluate {model_dir}", unit="split"):
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
    conf = model.config
    total = torch.cuda.get_device_properties(device).total_memory
    parameters = sum(p.numel() for p in model.parameters())
    return plan.eval_batch(parameters, conf.hidden_size, conf.vocab_size, seq_len, total)
