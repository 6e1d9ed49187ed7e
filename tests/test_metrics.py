"""What a run logs, read back by the trackers' own readers: TensorBoard's event files (config
`logging.tensorboard`) hold the same scalars as the history, once each, after a resume too."""

from __future__ import annotations

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rewarm.metrics import History, MetricsLog


def board(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard's own reader finds in `run_dir/tensorboard`, as (step, value) pairs."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def evaluation(step: int, loss: float) -> dict:
    return {"step": step, "tokens": step * 512, "lr": 1e-3, "train_loss": None if step == 0 else loss + 0.1,
            "val/downstream/loss": loss, "val/downstream/ppl": float(np.exp(loss)), "tokens_per_s": None}


def test_tensorboard_holds_the_history_once_each_after_a_resume(tmp_path):
    """Steps 1-4 logged, then a resume (a new log of the same history) and step 5: every step appears
    once, with the value logged (TensorBoard stores float32), and one event file is left."""
    steps = [{"step": s, "lr": 1e-3 * s / 5, "train_loss": 3.0 - 0.25 * s} for s in range(1, 6)]
    evals = [evaluation(0, 3.2), evaluation(2, 2.6), evaluation(4, 2.2), evaluation(5, 2.1)]
    at = {row["step"]: row for row in evals}
    first = MetricsLog(tmp_path, History(steps=[], evals=[evals[0]]), live=False, tensorboard=True)
    for row in steps[:4]:
        first.history.steps.append(row)
        if row["step"] in at:
            first.history.evals.append(at[row["step"]])
        first.log_step(row, at.get(row["step"]))
    first.close()
    resumed = MetricsLog(tmp_path, History(steps=steps[:4], evals=evals[:3]), live=False, tensorboard=True)
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


def test_without_the_setting_no_event_file_is_written(tmp_path):
    MetricsLog(tmp_path, History(steps=[], evals=[evaluation(0, 3.0)]), live=False).close()
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.jsonl").is_file()
