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
