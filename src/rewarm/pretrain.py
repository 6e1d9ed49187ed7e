"""The `pretrain` stage (demo only): the pipeline's own "Pythia".

A tiny GPT-NeoX (the `model` section) is trained from scratch on the upstream shards with
linear warm-up and cosine decay to 0.1 x max, as Pythia was, and saved as a Pythia-style
series of revisions: `step0` (the initialisation), the `checkpoint_steps`, and the final
step, each a Hugging Face model directory. `series.json` lists them and names the final one.
The re-warm grid then starts from these exactly as paper scale starts from Pythia's revisions.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rewarm import checkpoints
from rewarm import config as cfg
from rewarm.data import tokenizer as tok
from rewarm.data.shards import ShardReader
from rewarm.io import atomic_dir, check_free_space, write_json
from rewarm.train import Data, exit_if_preempted, run_fingerprint, train_loop

log = logging.getLogger(__name__)


def pretrain(
    config: cfg.Config, tokenizer_dir: Path, train_dir: Path, val_dir: Path, out_dir: Path, state_dir: Path, logs_dir: Path
) -> dict:
    """Pre-train and write the series to `out_dir`; training curves go to `logs_dir` (as a run's do)."""
    run = config.pretrain
    tokenizer = tok.load(tokenizer_dir)
    fingerprint = tok.fingerprint(tokenizer)
    data = Data(
        train=ShardReader(train_dir, tokenizer_fingerprint=fingerprint),
        val={"upstream": ShardReader(val_dir, tokenizer_fingerprint=fingerprint)},
    )
    gpt_config = checkpoints.model_architecture(config.model, tokenizer)
    model = checkpoints.init_model(gpt_config, run.seed)
    steps = cfg.total_steps(run, data.train.seq_len)
    keep = sorted(set(run.checkpoint_steps) | {steps})
    # Snapshots, then the series (a copy of them), plus the resumable state (weights and two Adam moments).
    needed = (2 * len(keep) + 3) * 4 * checkpoints.parameter_count(gpt_config)
    check_free_space(out_dir, needed, "pretrain")
    snapshots = state_dir / "snapshots"

    def snapshot(step: int, current, history) -> None:
        # Snapshots live with the resumable state until the series is complete.
        if step in keep:
            with atomic_dir(snapshots / f"step{step}", "pretrain") as tmp:
                checkpoints.save_model_dir(current, tokenizer_dir, tmp)

    arch = {"model": cfg.to_dict(config.model), "tokenizer": fingerprint}
    final = train_loop(model, run, data, logs_dir, state_dir, run_fingerprint(run, "scratch", data, arch),
                       on_step=snapshot, label="pretrain", snapshot_steps=frozenset(keep), trackers=config.logging)
    with atomic_dir(out_dir, "pretrain") as tmp:
        for step in keep:
            shutil.copytree(snapshots / f"step{step}", tmp / f"step{step}")
        write_json(tmp / checkpoints.SERIES, {"revisions": [f"step{s}" for s in keep], "final": f"step{steps}",
                                              "tokens_per_step": run.batch_sequences * data.train.seq_len})
    write_json(logs_dir / "metrics.json", final)
    exit_if_preempted("pretrain", state_dir, steps)
    shutil.rmtree(state_dir, ignore_errors=True)
    return final
