"""What a run logs, read back by the trackers' own readers: TensorBoard's event files (config
`logging.tensorboard`) and the offline W&B run (`logging.wandb`) hold the same scalars as the history,
once each, after a resume too."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rewarm.metrics import History, MetricsLog


def board(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard's own reader finds in `run_dir/tensorboard`, as (step, value) pairs."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_run(run_dir) -> tuple[dict[str, list[tuple[int, float]]], str, dict]:
    """Every scalar of the one offline W&B run in `run_dir/wandb`, as (step, value) pairs, its name and its
    config, read from its
    `.wandb` file: LevelDB's log format (32 KiB blocks of records, each with a 7-byte header: CRC, length,
    type: 1 whole, 2 first, 3 middle, 4 last part) after W&B's 7-byte file header, each record W&B's own
    protobuf `Record` (wandb.proto)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, at = [], b"", 7
    while at + 7 <= len(data):
        left = 32768 - at % 32768
        if left < 7:  # a block's tail too short for a header is padding
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        if kind == 0:  # zeros to the block's end
            at += left
            continue
        chunk, at = data[at + 7:at + 7 + length], at + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        else:
            records.append(pending + chunk)
    scalars: dict[str, list[tuple[int, float]]] = {}
    name, config = None, {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            name = record.run.display_name
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    scalars.setdefault(key, []).append((items["_step"], value))
    return scalars, name, config


def evaluation(step: int, loss: float) -> dict:
    return {"step": step, "tokens": step * 512, "lr": 1e-3, "train_loss": None if step == 0 else loss + 0.1,
            "val/downstream/loss": loss, "val/downstream/ppl": float(np.exp(loss)), "tokens_per_s": None}


def test_tensorboard_and_wandb_hold_the_history_once_each_after_a_resume(tmp_path):
    """Steps 1-4 logged, then a resume (a new log of the same history) and step 5: every step appears
    once, with the value logged (TensorBoard stores float32, W&B the float itself), and one event file
    and one W&B run are left, the run offline, named by the run directory, with the settings as config."""
    steps = [{"step": s, "lr": 1e-3 * s / 5, "train_loss": 3.0 - 0.25 * s} for s in range(1, 6)]
    evals = [evaluation(0, 3.2), evaluation(2, 2.6), evaluation(4, 2.2), evaluation(5, 2.1)]
    at = {row["step"]: row for row in evals}
    settings = {"max_lr": 1e-3, "schedule": "cosine"}
    first = MetricsLog(tmp_path, History(steps=[], evals=[evals[0]]), live=False, tensorboard=True, wandb=True, settings=settings)
    for row in steps[:4]:
        first.history.steps.append(row)
        if row["step"] in at:
            first.history.evals.append(at[row["step"]])
        first.log_step(row, at.get(row["step"]))
    first.close()
    resumed = MetricsLog(tmp_path, History(steps=steps[:4], evals=evals[:3]), live=False, tensorboard=True, wandb=True,
                         settings=settings)
    resumed.history.steps.append(steps[4])
    resumed.history.evals.append(evals[3])
    resumed.log_step(steps[4], evals[3])
    resumed.close()

    scalars = board(tmp_path)
    assert scalars["train/lr"] == [(s["step"], float(np.float32(s["lr"]))) for s in steps]
    assert scalars["train/train_loss"] == [(s["step"], float(np.float32(s["train_loss"]))) for s in steps]
    assert scalars["val/downstream/loss"] == [(e["step"], float(np.float32(e["val/downstream/loss"]))) for e in evals]
    assert [step for step, _ in scalars["val/downstream/ppl"]] == [0, 2, 4, 5]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1

    logged, name, config = wandb_run(tmp_path)
    assert name == tmp_path.name and {k: config[k]["value"] if isinstance(config[k], dict) else config[k] for k in settings} == settings
    assert logged["train/lr"] == [(s["step"], s["lr"]) for s in steps]
    assert logged["train/train_loss"] == [(s["step"], s["train_loss"]) for s in steps]
    assert logged["val/downstream/loss"] == [(e["step"], e["val/downstream/loss"]) for e in evals]
    assert [step for step, _ in logged["val/downstream/ppl"]] == [0, 2, 4, 5]
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert run.name.startswith("offline-run-")  # offline: nothing was sent


def test_without_the_setting_no_event_file_is_written(tmp_path):
    MetricsLog(tmp_path, History(steps=[], evals=[evaluation(0, 3.0)]), live=False).close()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()
    assert (tmp_path / "metrics.jsonl").is_file()


@pytest.mark.bad_input
def test_a_metrics_line_that_is_not_json_is_named_by_file_and_line(tmp_path):
    from rewarm.metrics import read_rows

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "val/upstream/loss": 5.0}\n\n{"step": 10, "val/upst\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 3: not a JSON row of a run's metrics"):
        read_rows(path)
    path.write_text('{"step": 0}\n\n{"step": 10}\n')
    assert read_rows(path) == [{"step": 0}, {"step": 10}]  # blank lines skipped
