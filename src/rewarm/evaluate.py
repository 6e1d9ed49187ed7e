"""Perplexity on held-out shards: mean token loss without gradients, batched."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from rewarm.data.shards import ShardReader


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


def evaluate_model(model_dir, val_dirs: dict, micro_batch: int = 16, device: str = "cpu") -> dict:
    """The `evaluate` stage: loss and perplexity of a model directory on every sequence of each
    validation split (not the in-training samples), batched, without gradients."""
    from tqdm import tqdm

    from rewarm.checkpoints import load_model
    from rewarm.data import tokenizer as tok

    model = load_model(model_dir, device)
    fingerprint = tok.fingerprint(tok.load(model_dir))
    results = {}
    for name, path in tqdm(sorted(val_dirs.items()), desc=f"evaluate {model_dir}", unit="split"):
        reader = ShardReader(path, tokenizer_fingerprint=fingerprint)
        loss = mean_loss(model, reader, len(reader), micro_batch, torch.device(device))
        results[name] = {"loss": loss, "ppl": perplexity(loss), "sequences": len(reader), "tokens": len(reader) * reader.seq_len}
    return results
