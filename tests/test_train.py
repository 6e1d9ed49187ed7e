"""Re-warm training of one cell through the real command line: metrics, resume after SIGKILL
(bit-exact on CPU), divergence, gradient accumulation, replay and the data order."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from rewarm import config as cfg
from rewarm import grid, metrics, runtime, state
from rewarm.checkpoints import write_checksums
from rewarm.config import Plan
from rewarm.data.shards import ShardError, ShardReader, ShuffledStream
from rewarm.train import Data, step_batch, step_batches
from tests.project import cell_of, kill_job, rewarm, run_env, small_params, train_args, worker_pids, write_params


def comparable(row: dict) -> dict:
    """A metrics row without the wall-clock figure."""
    return {k: v for k, v in row.items() if k != "tokens_per_s"}


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(prepared_project, tmp_path_factory) -> Path:
    """An uninterrupted run of the small project's cell."""
    cell = cell_of(prepared_project)
    out = tmp_path_factory.mktemp("reference") / cell
    rewarm(*train_args(cell, out=str(out), state=str(out.parent / "state")), cwd=prepared_project)
    return out


def test_run_directory_holds_metrics_model_and_logs(reference_run):
    rows = read_rows(reference_run)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    first = rows[0]
    assert first["tokens"] == 0 and first["train_loss"] is None  # the step-0 point, before any update
    assert first["val/downstream/loss"] > rows[-1]["val/downstream/loss"]  # it learned the downstream corpus
    assert rows[2]["tokens"] == 20 * 8 * 64
    for row in rows:
        assert row["val/upstream/ppl"] == pytest.approx(np.exp(row["val/upstream/loss"]))
    final = json.loads((reference_run / "metrics.json").read_text())
    assert final == comparable(rows[-1]) and rows[-1]["tokens_per_s"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(reference_run / "model"))
    assert model.config.model_type == "gpt_neox"
    lr_log = (reference_run / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()
    assert lr_log[0].split("\t") == ["step", "lr"] and len(lr_log) == 1 + 40
    ppl_log = (reference_run / "dvclive/plots/metrics/val/downstream/ppl.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in ppl_log[1:]] == ["0", "10", "20", "30", "40"]
    config = json.loads((reference_run / "config.json").read_text())
    assert config["train"]["max_lr"] == 2e-3 and config["cell"] == reference_run.name
    state_dir = reference_run.parent / "state"
    assert not list(state_dir.glob("state*"))  # the state files and their index are removed once complete


@pytest.mark.slow
def test_rerun_from_a_clean_state_is_bit_identical(prepared_copy, reference_run):
    cell = cell_of(prepared_copy)
    rewarm(*train_args(cell), cwd=prepared_copy)
    run_dir = prepared_copy / "runs" / cell
    for name in ("metrics.json", "model/model.safetensors", "curves/upstream.csv", "curves/downstream.csv"):
        assert (run_dir / name).read_bytes() == (reference_run / name).read_bytes(), name


def test_lr_follows_the_schedule(reference_run):
    lrs = [float(line.split("\t")[1]) for line in (reference_run / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]]
    # 40 steps, warm-up 0.05 x 40 = 2 steps: 2e-3 x 1/3, 2e-3 x 2/3, then cosine from 2e-3 to 2e-4.
    assert lrs[:3] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])
    assert lrs[-1] == pytest.approx(2e-4)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_bit_exact(prepared_copy, reference_run, sig):
    cell = cell_of(prepared_copy)
    state_index = prepared_copy / "state/runs" / cell / "state.json"
    command = [sys.executable, "-m", "rewarm", *train_args(cell)]
    log_path = prepared_copy / "killed.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=prepared_copy, env=run_env(), stderr=log)
        deadline = time.monotonic() + 300
        while not (state_index.exists() and json.loads(state_index.read_text())["step"] >= 15):
            assert process.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(sig)
        process.wait()
    assert not (prepared_copy / "runs" / cell / "metrics.json").exists()
    if sig == signal.SIGTERM:  # pre-empted: the state of the step in progress is saved before exit
        assert process.returncode == 143
        saved = json.loads(state_index.read_text())["step"]
        assert f"SIGTERM: state saved at step {saved}" in log_path.read_text()
    resumed = rewarm(*train_args(cell), cwd=prepared_copy)
    assert "resuming from step" in resumed.stderr
    # The shards were verified by the killed run: the resumed one hashes none of them again.
    verified = json.loads((prepared_copy / "state/runs" / cell / "verified-shards.json").read_text())
    assert "shards verified: 0 hashed, " in resumed.stderr and len(verified) >= 3  # train and both val splits
    run_dir = prepared_copy / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(reference_run)]
    assert (run_dir / "model/model.safetensors").read_bytes() == (reference_run / "model/model.safetensors").read_bytes()


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_rerun_of_a_finished_cell_leaves_nothing_that_looks_finished(prepared_copy, reference_run):
    """The run directory is replaced whole: a rerun of a finished cell, killed part-way, leaves neither the
    earlier run's metrics.json and model beside its own partial curve (which would look like a finished
    run of the new settings) nor a curve longer than it trained."""
    write_params(prepared_copy / "params.yaml", small_params(train={"tokens": 2000 * STEP_TOKENS}))  # long enough to kill
    cell = cell_of(prepared_copy)
    run_dir = prepared_copy / "runs" / cell
    shutil.copytree(reference_run, run_dir)  # a finished run in its place
    state_index = prepared_copy / "state/runs" / cell / "state.json"
    process = subprocess.Popen([sys.executable, "-m", "rewarm", *train_args(cell)], cwd=prepared_copy, env=run_env(),
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not state_index.exists():
        assert process.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.kill()
    process.wait()
    saved = json.loads(state_index.read_text())["step"]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model").exists()
    assert all(row["step"] <= saved + 10 for row in read_rows(run_dir)) and saved < 2000


@pytest.mark.fault
def test_a_state_that_cannot_be_written_stops_with_a_message_and_no_traceback(prepared_copy):
    """A write that fails while saving the state (here a file size limit, RLIMIT_FSIZE, as a full disk
    does): the run stops naming the state directory and the operating system's reason, says the earlier
    state is kept, leaves no partial file, and prints no traceback (a RuntimeError and ImportErrors before)."""
    import resource

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    cell = cell_of(prepared_copy)
    result = subprocess.run([sys.executable, "-m", "rewarm", *train_args(cell)], cwd=prepared_copy, env=run_env(),
                            capture_output=True, text=True, timeout=600, preexec_fn=limited)
    state_dir = prepared_copy / "state/runs" / cell
    assert result.returncode == 1 and "Traceback" not in result.stderr and "ImportError" not in result.stderr, result.stderr[-3000:]
    assert f"rewarm train: error: {state_dir.relative_to(prepared_copy)}: writing the training state of step" in result.stderr
    assert "failed (File too large); the state saved before it is kept" in result.stderr
    assert not list(state_dir.glob("*.partial-*"))


@pytest.mark.fault
def test_ctrl_c_stops_training_with_a_message_and_no_traceback(prepared_copy):
    """Ctrl-C (SIGINT) in a training run: a one-line message, exit status 130, no traceback, the saved
    state kept for the rerun to resume from."""
    write_params(prepared_copy / "params.yaml", small_params(train={"tokens": 2000 * STEP_TOKENS}))  # long enough to interrupt
    cell = cell_of(prepared_copy)
    state_index = prepared_copy / "state/runs" / cell / "state.json"
    # SIGINT as a terminal delivers it (a shell running the tests in the background passes it on as ignored)
    process = subprocess.Popen([sys.executable, "-m", "rewarm", *train_args(cell)], cwd=prepared_copy, env=run_env(),
                               stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not state_index.exists():
        assert process.poll() is None, "training finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr and "ImportError" not in stderr, stderr[-3000:]
    assert "rewarm train: interrupted (Ctrl-C); nothing half-written is left as an output; rerun to resume" in stderr
    assert json.loads(state_index.read_text())["step"] >= 5


@pytest.mark.slow
@pytest.mark.fault
def test_altered_state_is_refused(prepared_copy):
    cell = cell_of(prepared_copy)
    state_dir = prepared_copy / "state/runs" / cell
    command = [sys.executable, "-m", "rewarm", *train_args(cell)]
    process = subprocess.Popen(command, cwd=prepared_copy, env=run_env(), stderr=subprocess.DEVNULL)
    while not (state_dir / "state.json").exists():
        assert process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = state_dir / json.loads((state_dir / "state.json").read_text())["file"]
    state.write_bytes(state.read_bytes()[:-1000])
    result = rewarm(*train_args(cell), cwd=prepared_copy, check=False)
    assert result.returncode == 1
    assert f"{state.name}: checksum does not match" in result.stderr


@pytest.mark.fault
def test_divergence_names_the_step_and_keeps_the_saved_state(prepared_copy):
    base = prepared_copy / "checkpoints/base/scratch"
    weights = load_file(base / "model.safetensors")
    name = next(k for k in weights if "mlp.dense_4h_to_h.weight" in k)
    weights[name] = torch.full_like(weights[name], float("inf"))
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    write_checksums(base)  # weights poisoned on purpose, as a checkpoint that was saved so would be
    cell = cell_of(prepared_copy)
    result = rewarm(*train_args(cell), cwd=prepared_copy, check=False)
    assert result.returncode == 1
    assert "loss is nan at step 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (prepared_copy / "runs" / cell / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.fault
def test_exploding_learning_rate_stops_at_a_later_step(prepared_copy):
    params = small_params(train={"max_lr": 1e6, "warmup_fraction": 0.0, "grad_clip": 0.0, "save_every": 1})
    write_params(prepared_copy / "params.yaml", params)
    cell = cell_of(prepared_copy)
    result = rewarm(*train_args(cell), cwd=prepared_copy, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    message = next(line for line in result.stderr.splitlines() if "loss is" in line)
    step = int(message.split(" at step ")[1].split()[0])
    assert step >= 1
    saved = json.loads((prepared_copy / "state/runs" / cell / "state.json").read_text())
    assert saved["step"] == step  # the last state saved is from before the failing update, intact
    from rewarm.state import load_state

    assert load_state(prepared_copy / "state/runs" / cell, saved["fingerprint"])["step"] == step


def readers(project: Path) -> tuple[ShardReader, ShardReader]:
    return ShardReader(project / "data/tokens/downstream/train"), ShardReader(project / "data/tokens/upstream/train")


def test_shuffled_stream_is_a_pure_function_of_position(prepared_project):
    downstream, _ = readers(prepared_project)
    n = len(downstream)
    stream = ShuffledStream(downstream, seed=3)
    whole = stream.take(0, n + 5)
    parts = np.concatenate([ShuffledStream(downstream, 3).take(0, 7), ShuffledStream(downstream, 3).take(7, n - 2)])
    assert (whole == parts).all()
    first_epoch = {tuple(row) for row in whole[:n]}
    assert len(first_epoch) == len({tuple(downstream[i]) for i in range(n)})  # every sequence once per epoch
    assert not (ShuffledStream(downstream, 4).take(0, 10) == whole[:10]).all()


def test_replay_takes_its_share_of_each_batch_from_upstream(prepared_project):
    downstream, upstream = readers(prepared_project)
    run = grid.from_dict(small_params(train={"replay_fraction": 0.25})).train
    data = Data(train=downstream, val={}, replay=upstream, replay_fraction=0.25)
    plan = Plan.of(run, downstream.seq_len, 0.25, world=1)
    assert plan.uniform and [plan.replay_in(s) for s in range(5)] == [2] * 5  # 0.25 x 8 sequences
    streams = (ShuffledStream(downstream, run.seed), ShuffledStream(upstream, run.seed + 1))
    batch = step_batch(data, plan, run, streams, step=3, rank=0, world=1).numpy()
    assert (batch[:6] == streams[0].take(18, 6)).all()
    assert (batch[6:] == streams[1].take(6, 2)).all()
    # Two processes split the same global batch.
    halves = [step_batch(data, Plan.of(run, downstream.seq_len, 0.25, world=2), run, streams, 3, r, 2).numpy() for r in (0, 1)]
    assert (np.concatenate(halves) == batch).all()


def test_a_share_below_one_sequence_per_step_is_exact_over_the_run(prepared_project):
    """Ibrahim et al. 2024's 0.5%: 0.04 of a batch of 8. Step s replays floor((s+1) x 0.04) - floor(s x 0.04)
    sequences: one at steps 24, 49, 74, ... and none at the others; over 100 steps exactly 4 = 0.5% of 800.
    Each stream continues from where it stopped, so no sequence is skipped or read twice."""
    downstream, upstream = readers(prepared_project)
    run = grid.from_dict(small_params(train={"replay_fraction": 0.005})).train
    data = Data(train=downstream, val={}, replay=upstream, replay_fraction=0.005)
    plan = Plan.of(run, downstream.seq_len, 0.005, world=1)
    counts = [plan.replay_in(s) for s in range(100)]
    assert not plan.uniform and sum(counts) == 4 and [s for s, c in enumerate(counts) if c] == [24, 49, 74, 99]
    streams = (ShuffledStream(downstream, run.seed), ShuffledStream(upstream, run.seed + 1))
    at_24 = step_batch(data, plan, run, streams, step=24, rank=0, world=1).numpy()
    assert (at_24[:7] == streams[0].take(24 * 8, 7)).all() and (at_24[7:] == streams[1].take(0, 1)).all()
    at_25 = step_batch(data, plan, run, streams, step=25, rank=0, world=1).numpy()
    assert (at_25 == streams[0].take(24 * 8 + 7, 8)).all()  # the downstream stream goes on where step 24 left it
    at_49 = step_batch(data, plan, run, streams, step=49, rank=0, world=1).numpy()
    assert (at_49[7:] == streams[1].take(1, 1)).all()
    # 0.3 of 8 = 2.4 a step: 2, 2, 3, 2, 3, ... (floor of 2.4 k), 12 in 5 steps
    assert [cfg.replay_in_step(0.3, 8, s) for s in range(5)] == [2, 2, 3, 2, 3]


class Counted:
    """A split that counts the sequences read from it."""

    def __init__(self, reader: ShardReader):
        self.reader, self.reads, self.seq_len, self.split_dir = reader, 0, reader.seq_len, reader.split_dir

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.reader[index]


def test_batches_hold_distinct_sequences_and_each_process_reads_its_share(prepared_project):
    """Steps past the end of an epoch: every global batch holds distinct sequences (an epoch's last
    len % batch sequences are left out); within the first epoch the batches are the stream's
    consecutive positions (the order runs of one epoch always had); each of 2 processes reads only
    its 4 of the 8 sequences (the second: 2 downstream, 2 replayed)."""
    downstream, upstream = readers(prepared_project)
    n = len(downstream)
    run = grid.from_dict(small_params(train={"replay_fraction": 0.25})).train
    data = Data(train=downstream, val={}, replay=upstream, replay_fraction=0.25)
    plan = Plan.of(run, downstream.seq_len, 0.25, world=1)
    fresh = 6
    assert n % fresh, "the test needs a split whose size is not a multiple of the batch"
    streams = (ShuffledStream(downstream, run.seed), ShuffledStream(upstream, run.seed + 1))
    per_epoch = n // fresh
    for step in range(0, 3 * per_epoch + 2):
        batch = step_batch(data, plan, run, streams, step, 0, 1).numpy()
        assert len({tuple(row) for row in batch[:fresh]}) == fresh, step  # no sequence twice
        if step < per_epoch:
            assert (batch[:fresh] == ShuffledStream(downstream, run.seed).take(step * fresh, fresh)).all()
    # Batch `per_epoch` would have crossed the first epoch's end: it opens the second epoch instead.
    second = np.random.default_rng([run.seed, 1]).permutation(n)[:fresh]
    assert (step_batch(data, plan, run, streams, per_epoch, 0, 1).numpy()[:fresh] == np.stack([downstream[int(i)] for i in second])).all()
    counted = (Counted(downstream), Counted(upstream))
    data = Data(train=counted[0], val={}, replay=counted[1], replay_fraction=0.25)
    own = (ShuffledStream(counted[0], run.seed), ShuffledStream(counted[1], run.seed + 1))
    plan2 = Plan.of(run, downstream.seq_len, 0.25, world=2)
    whole = step_batch(Data(train=downstream, val={}, replay=upstream, replay_fraction=0.25), plan, run, streams, 5, 0, 1).numpy()
    for rank, (fresh_reads, replay_reads) in enumerate([(4, 0), (2, 2)]):
        before = (counted[0].reads, counted[1].reads)
        share = step_batch(data, plan2, run, own, 5, rank, 2).numpy()
        assert (counted[0].reads - before[0], counted[1].reads - before[1]) == (fresh_reads, replay_reads)
        assert (share == whole[4 * rank : 4 * rank + 4]).all()
    with pytest.raises(Exception, match="fewer than a step's"):
        ShuffledStream(downstream, 0).batch(0, n + 1)


class Failing(Counted):
    """A split whose reads fail after `after` sequences, as a shard damaged while a run reads it."""

    def __init__(self, reader: ShardReader, after: int):
        super().__init__(reader)
        self.after = after

    def __getitem__(self, index: int):
        if self.reads == self.after:
            raise ShardError(f"{self.split_dir}: damaged at sequence {index}")
        return super().__getitem__(index)


def test_batches_are_read_ahead_in_order_and_the_reader_stops_with_the_loop(prepared_project):
    """Issue 30: the loop's batches are read in a thread ahead of the step. From a resumed step on, each
    is that step's batch read alone (the stream's own positions, computed here without the loop), as
    int32 for the device to widen; a read that fails in the thread fails the loop with its message,
    after the batches before it; a loop that stops early stops the thread."""
    downstream, upstream = readers(prepared_project)
    run = grid.from_dict(small_params(train={"replay_fraction": 0.25})).train
    data = Data(train=downstream, val={}, replay=upstream, replay_fraction=0.25)
    plan = Plan.of(run, downstream.seq_len, 0.25, world=1)

    def streams(train=downstream):
        return ShuffledStream(train, run.seed), ShuffledStream(upstream, run.seed + 1)

    ahead = list(step_batches(data, plan, run, streams(), start=3, rank=0, world=1))
    assert len(ahead) == plan.total_steps - 3 == 37
    own = streams()
    for step, batch in zip(range(3, plan.total_steps), ahead):
        assert batch.dtype == torch.int32 and not batch.is_pinned()  # pinned only for a GPU
        # Within the first epoch: 6 fresh sequences at stream position 6 x step, 2 replayed at 2 x step.
        if (step + 1) * 6 <= len(downstream) and (step + 1) * 2 <= len(upstream):
            assert (batch.numpy()[:6] == own[0].take(6 * step, 6)).all(), step
            assert (batch.numpy()[6:] == own[1].take(2 * step, 2)).all(), step
    assert torch.equal(ahead[0].long(), torch.from_numpy(np.concatenate([own[0].take(18, 6), own[1].take(6, 2)])))

    failing = Failing(downstream, after=6 * 5 + 3)  # fails within step 5's batch
    got = []
    with pytest.raises(ShardError, match="damaged at sequence"):
        for batch in step_batches(Data(train=failing, val={}, replay=upstream, replay_fraction=0.25), plan, run, streams(failing), 0, 0, 1):
            got.append(batch)
    assert len(got) == 5

    batches = step_batches(data, plan, run, streams(), start=0, rank=0, world=1)
    next(batches)
    assert any(t.name == "train-prefetch" for t in threading.enumerate())
    batches.close()
    assert not any(t.name == "train-prefetch" and t.is_alive() for t in threading.enumerate())


@pytest.mark.slow
def test_gradient_accumulation_matches_one_full_batch(prepared_copy, reference_run):
    write_params(prepared_copy / "params.yaml", small_params(train={"micro_batch_sequences": 8}))
    cell = cell_of(prepared_copy)
    rewarm(*train_args(cell), cwd=prepared_copy)
    full = read_rows(prepared_copy / "runs" / cell)
    accumulated = read_rows(reference_run)
    for a, b in zip(full, accumulated):
        assert a["val/downstream/loss"] == pytest.approx(b["val/downstream/loss"], rel=1e-4)


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one_and_saves_plain_weights(prepared_copy, reference_run, monkeypatch):
    """`compile: true` (the paper configuration's setting for GPUs) through torch.compile on CPU:
    the same curve up to kernel rounding, and a model directory without torch.compile's prefixes."""
    write_params(prepared_copy / "params.yaml", small_params(train={"compile": True}))
    cache = prepared_copy / "inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    cell = cell_of(prepared_copy)
    rewarm(*train_args(cell), cwd=prepared_copy)
    assert cache.is_dir() and any(cache.rglob("*.py")), "torch.compile did not run (no Inductor kernels written)"
    compiled, eager = read_rows(prepared_copy / "runs" / cell), read_rows(reference_run)
    assert [r["step"] for r in compiled] == [r["step"] for r in eager]
    for a, b in zip(compiled, eager):
        assert a["val/downstream/loss"] == pytest.approx(b["val/downstream/loss"], rel=1e-3), a["step"]
    weights = load_file(prepared_copy / "runs" / cell / "model" / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k or k.startswith("module.")]
    AutoModelForCausalLM.from_pretrained(prepared_copy / "runs" / cell / "model")


def test_tensorboard_logs_what_dvclive_and_the_metrics_log(prepared_copy, reference_run):
    """`logging.tensorboard: true`: the cell's event files, read by TensorBoard's own reader, hold every
    step's learning rate as DVCLive's lr.tsv does and every evaluation's loss as metrics.jsonl does; the
    results are those of the run without it (the setting changes no result)."""
    from tests.test_metrics import board

    write_params(prepared_copy / "params.yaml", small_params(logging={"tensorboard": True}))
    cell = cell_of(prepared_copy)
    rewarm(*train_args(cell), cwd=prepared_copy)
    run_dir = prepared_copy / "runs" / cell
    scalars = board(run_dir)
    lr_log = [line.split("\t") for line in (run_dir / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]]
    assert scalars["train/lr"] == [(int(step), float(np.float32(float(lr)))) for step, lr in lr_log]
    assert scalars["val/upstream/loss"] == [(row["step"], float(np.float32(row["val/upstream/loss"]))) for row in read_rows(run_dir)]
    assert (run_dir / "metrics.json").read_bytes() == (reference_run / "metrics.json").read_bytes()


@pytest.mark.bad_input
def test_unknown_cell_is_refused(prepared_copy):
    result = rewarm(*train_args("ckpt-nope"), cwd=prepared_copy, check=False)
    assert result.returncode == 2 and "cell 'ckpt-nope' is not in the grid" in result.stderr


def torchrun_command(cell: str) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rewarm", *train_args(cell)]


@pytest.fixture(scope="module")
def torchrun_run(prepared_project, tmp_path_factory):
    """The test cell trained by 2 CPU processes under torchrun (gloo), uninterrupted."""
    project = tmp_path_factory.mktemp("torchrun") / "project"
    shutil.copytree(prepared_project, project, symlinks=True)
    cell = cell_of(project)
    result = subprocess.run(torchrun_command(cell), cwd=project, env=run_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (project / "torchrun.log").write_text(result.stderr)
    return project / "runs" / cell


def test_torchrun_two_processes_match_one(torchrun_run, reference_run):
    """DistributedDataParallel over 2 CPU processes (gloo): the same global batch split in two
    gives the same run as one process, up to floating-point summation order."""
    distributed = read_rows(torchrun_run)
    single = read_rows(reference_run)
    assert [r["step"] for r in distributed] == [r["step"] for r in single]
    for a, b in zip(distributed, single):
        for key in ("train_loss", "val/upstream/loss", "val/downstream/loss"):
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-3), (a["step"], key)


def shards_of_the_cell(project: Path) -> list[Path]:
    """The shard files a replay-free cell reads (its train split and both validation splits), from the manifests."""
    splits = ["downstream/train", "upstream/val", "downstream/val"]
    return [project / "data/tokens" / split / shard["file"] for split in splits
            for shard in json.loads((project / "data/tokens" / split / "manifest.json").read_text())["shards"]]


def test_the_ranks_share_the_hashing_of_the_shards(torchrun_run):
    """Under torchrun the shards are hashed once, shared by the ranks (inside the process group,
    made first), not by rank 0 alone while the others wait: each rank hashed its part, and the stamp
    records them all."""
    project = torchrun_run.parent.parent
    assert "_replay-0_" in torchrun_run.name  # no replay split read
    shards = shards_of_the_cell(project)
    log = (project / "torchrun.log").read_text()
    hashed = {int(rank): int(count) for rank, count in re.findall(r"rank (\d) of 2 hashed (\d+)", log)}
    assert hashed == {0: (len(shards) + 1) // 2, 1: len(shards) // 2}, log[-3000:]
    assert log.count(f"shards verified: {len(shards)} hashed, 0 unchanged") == 2
    stamp = json.loads((project / "state/runs" / torchrun_run.name / "verified-shards.json").read_text())
    assert sorted(stamp) == sorted(str(path.resolve()) for path in shards)


@pytest.mark.fault
def test_a_corrupt_shard_found_by_one_rank_stops_every_rank_with_its_name(prepared_copy):
    """The shard hashed by rank 1 is corrupt: every rank stops with the message naming it (none waits
    for the others until the timeout) and no traceback."""
    cell = cell_of(prepared_copy)
    corrupt = shards_of_the_cell(prepared_copy)[1]  # the second shard to hash: rank 1's first
    data = bytearray(corrupt.read_bytes())
    data[-100] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    result = subprocess.run(torchrun_command(cell), cwd=prepared_copy, env=run_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    message = f"rewarm train: error: {corrupt.relative_to(prepared_copy)}: checksum does not match the manifest"
    assert result.stderr.count(message) == 2, result.stderr[-3000:]  # rank 0 stops with rank 1's finding
    assert "Traceback" not in result.stderr.split("failed (exitcode")[0] and "terminate called" not in result.stderr
    assert not (prepared_copy / "runs" / cell).exists()


COUNTING_DRIVER = (
    "import atexit, hashlib, os, sys\n"
    "from transformers import GPTNeoXForCausalLM\n"
    "from rewarm.cli import main\n"
    "seen = []\n"
    "forward = GPTNeoXForCausalLM.forward\n"
    "def counted(self, input_ids=None, **kwargs):\n"
    "    if not self.training:\n"
    "        seen.append(hashlib.sha256(input_ids.cpu().numpy().tobytes()).hexdigest()[:16])\n"
    "    return forward(self, input_ids=input_ids, **kwargs)\n"
    "GPTNeoXForCausalLM.forward = counted\n"
    "rank = os.environ.get('RANK', '0')\n"
    "atexit.register(lambda: open(f'eval-{rank}.txt', 'w').write(f\"{len(seen)} {','.join(sorted(set(seen)))}\"))\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.slow
def test_in_training_evaluation_is_shared_by_the_processes(prepared_project, tmp_path):
    """The evaluations during training split their batches across the processes instead of each running
    them all: each of 2 processes runs the same number of forward passes (FSDP's are collectives),
    fewer than one process alone, and together they cover every batch one process evaluates."""
    driver = tmp_path / "driver.py"
    driver.write_text(COUNTING_DRIVER)
    counts, batches = {}, {}
    for name, launcher in (("one", [sys.executable]), ("two", [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                                                                "--nproc_per_node", "2"])):
        project = tmp_path / name
        shutil.copytree(prepared_project, project, symlinks=True)
        # 6 steps, evaluated every 2 (4 evaluations of 2 samples): short, and several batches per evaluation
        write_params(project / "params.yaml", small_params(train={"tokens": 6 * STEP_TOKENS, "eval_every": 2}))
        result = subprocess.run([*launcher, str(driver), *train_args(cell_of(project))], cwd=project, env=run_env(),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        for record in project.glob("eval-*.txt"):  # one per process, written as it exits
            count, hashes = record.read_text().split()
            rank = int(record.stem.removeprefix("eval-"))
            counts[name, rank], batches[name, rank] = int(count), set(hashes.split(","))
    assert set(counts) == {("one", 0), ("two", 0), ("two", 1)}
    assert counts["two", 0] == counts["two", 1] < counts["one", 0]
    assert batches["two", 0] | batches["two", 1] == batches["one", 0]
    assert batches["two", 1] < batches["one", 0]  # rank 1 did not evaluate every batch


def test_compile_wraps_ddp_whose_gradients_are_its_buckets(prepared_project, one_process_group):
    """torch.compile goes around DistributedDataParallel, not inside it (so the all-reduce can overlap
    the backward pass), and the gradients are views of DDP's buckets rather than a second copy."""
    from torch.nn.parallel import DistributedDataParallel

    from rewarm.checkpoints import load_model, unwrap
    from rewarm.train import wrap_model

    model = load_model(prepared_project / "checkpoints/base/scratch")
    wrapped = wrap_model(model, compile=True, ddp=True, device=torch.device("cpu"))
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(wrapped._orig_mod, DistributedDataParallel) and wrapped._orig_mod.gradient_as_bucket_view
    assert unwrap(wrapped) is model
    assert wrap_model(model, compile=False, ddp=False, device=torch.device("cpu")) is model


@pytest.mark.fault
def test_sigterm_to_one_process_stops_all_at_one_step(prepared_copy, torchrun_run):
    """Under torchrun a SIGTERM reaches one process (here rank 1, which does not save): the stop is
    agreed at the next step's all-reduce, rank 0 saves that step, every process exits, and the
    resumed run ends bit-identical to the uninterrupted 2-process run."""
    cell = cell_of(prepared_copy)
    state_index = prepared_copy / "state/runs" / cell / "state.json"
    log_path = prepared_copy / "torchrun.log"
    with open(log_path, "w") as log:
        agent = subprocess.Popen(torchrun_command(cell), cwd=prepared_copy, env=run_env(), stderr=log)
        deadline = time.monotonic() + 300
        while not (state_index.exists() and json.loads(state_index.read_text())["step"] >= 10):
            assert agent.poll() is None, "training finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        workers = worker_pids(agent.pid)
        assert set(workers) == {0, 1}
        os.kill(workers[1], signal.SIGTERM)
        agent.wait(timeout=300)
    text = log_path.read_text()
    assert agent.returncode != 0 and not (prepared_copy / "runs" / cell / "metrics.json").exists()
    saved = json.loads(state_index.read_text())["step"]
    assert f"SIGTERM: state saved at step {saved}" in text and 10 <= saved < 40, text[-3000:]
    resumed = subprocess.run(torchrun_command(cell), cwd=prepared_copy, env=run_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and f"resuming from step {saved}" in resumed.stderr, resumed.stderr[-3000:]
    run_dir = prepared_copy / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(torchrun_run)]
    assert (run_dir / "model/model.safetensors").read_bytes() == (torchrun_run / "model/model.safetensors").read_bytes()


@pytest.mark.parametrize("name, kind", [("adamw", torch.optim.AdamW), ("radam", torch.optim.RAdam)])
def test_optimizer_settings_and_weight_decay_groups(prepared_project, name, kind):
    from rewarm.checkpoints import load_model
    from rewarm.train import build_optimizer

    run = grid.from_dict(small_params(train={"optimizer": name, "beta2": 0.98, "weight_decay": 0.1})).train
    model = load_model(prepared_project / "checkpoints/base/scratch")
    optimizer = build_optimizer(model, run, torch.device("cpu"))
    assert type(optimizer) is kind
    decay, no_decay = optimizer.param_groups
    assert decay["betas"] == (0.9, 0.98) and decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])  # biases, LayerNorms
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    if name == "radam":
        assert decay["decoupled_weight_decay"] is True


def test_evaluation_does_not_depend_on_batch_size(prepared_project):
    from rewarm.evaluate import evaluate_model

    model = prepared_project / "checkpoints/base/scratch"
    val = {c: prepared_project / f"data/tokens/{c}/val" for c in ("upstream", "downstream")}
    small, large = evaluate_model(model, val, micro_batch=3), evaluate_model(model, val, micro_batch=16)
    for corpus in val:
        assert small[corpus]["sequences"] == len(ShardReader(val[corpus]))  # every sequence, not a sample
        assert small[corpus]["loss"] == pytest.approx(large[corpus]["loss"], rel=1e-5)


def test_evaluation_runs_on_the_configured_device_and_precision(prepared_project, caplog):
    """Evaluation follows train.device and train.precision: `cuda` is refused without a GPU (and
    chosen by `auto` with one); bf16 autocast really runs (the loss moves, by less than 1%)."""
    import torch

    from rewarm.evaluate import evaluate_model
    from rewarm.runtime import pick_device

    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu") and pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(cfg.ConfigError, match="device: 'cuda' requested but no CUDA device is available"):
            pick_device("cuda")
    model = prepared_project / "checkpoints/base/scratch"
    val = {"downstream": prepared_project / "data/tokens/downstream/val"}
    caplog.set_level("INFO")
    full = evaluate_model(model, val, device="cpu", precision="fp32")["downstream"]["loss"]
    half = evaluate_model(model, val, device="cpu", precision="bf16")["downstream"]["loss"]
    assert full != half and half == pytest.approx(full, rel=1e-2)
    assert "on cpu (bf16, 16 sequences per pass)" in caplog.text


def test_evaluation_batch_fills_the_gpu():
    """plan.eval_batch against the formula worked by hand for Pythia-410M on an 80 GB GPU:
    weights 4 x 405,334,016 bytes; per sequence 2048 x (24 x 1024 + 10 x 50304) bytes."""
    from rewarm import plan

    per_sequence = 2048 * (24 * 1024 + 10 * 50304)
    assert per_sequence == 1_080_557_568
    assert plan.eval_batch(405_334_016, 1024, 50304, 2048, 80 * 10**9) == (64 * 10**9 - 4 * 405_334_016) // per_sequence == 57
    assert plan.eval_batch(405_334_016, 1024, 50304, 2048, 10**9) == 1  # too small: one at a time
    assert plan.eval_batch(1000, 64, 4096, 64, 80 * 10**9) == 256  # a tiny model: capped


# -- one run for several cells, precision, and the non-finite-gradient guard ----------------------------

STEP_TOKENS = 8 * 64  # .test/params.yaml: 8 sequences of 64 tokens per step


@pytest.mark.slow
def test_a_shorter_cell_read_from_the_longer_run_equals_training_it_alone(prepared_copy):
    """Two cells on one 40-step schedule, stopping at 25 and 40 steps: the longer run records the
    shorter cell at step 25 (an evaluation off the every-10 grid) and `rewarm prefix` makes its run
    directory; training the shorter cell alone gives the same bytes."""
    params = small_params(train={"schedule_tokens": 40 * STEP_TOKENS, "save_every": 100},
                          grid={"studies": {"short": {"settings": {"tokens": 25 * STEP_TOKENS}, "vary": {"max_lr": [2e-3]}},
                                            "long": {"settings": {"tokens": 40 * STEP_TOKENS}, "vary": {"max_lr": [2e-3]}}}})
    write_params(prepared_copy / "params.yaml", params)
    from rewarm import grid

    config = grid.load(prepared_copy / "params.yaml")
    short, long = (grid.studies(config)[s][0] for s in ("short", "long"))
    assert grid.trained_by(config) == {short: long, long: long}
    rewarm(*train_args(long), cwd=prepared_copy)
    index = json.loads((prepared_copy / "runs" / long / "stops/stops.json").read_text())
    assert index == {"run": long, "stops": {short: 25}}
    assert [r["step"] for r in read_rows(prepared_copy / "runs" / long)] == [0, 10, 20, 25, 30, 40]
    rewarm("prefix", "--cell", short, "--run", f"runs/{long}", "--out", f"runs/{short}", cwd=prepared_copy)
    rewarm(*train_args(short, out="alone", state="state/alone"), cwd=prepared_copy)
    read, alone = prepared_copy / "runs" / short, prepared_copy / "alone"
    assert [r["step"] for r in read_rows(read)] == [0, 10, 20, 25]
    assert [comparable(r) for r in read_rows(read)] == [comparable(r) for r in read_rows(alone)]
    for name in ("metrics.json", "model/model.safetensors", "curves/upstream.csv", "curves/downstream.csv",
                 "dvclive/plots/metrics/train/lr.tsv", "dvclive/plots/metrics/train/train_loss.tsv",
                 "dvclive/plots/metrics/val/downstream/loss.tsv"):
        assert (read / name).read_bytes() == (alone / name).read_bytes(), name
    assert json.loads((read / "config.json").read_text())["read_from"] == {"run": long, "step": 25}
    # A cell the run did not record is refused, naming what it records.
    refused = rewarm("prefix", "--cell", long, "--run", f"runs/{long}", "--out", "elsewhere", cwd=prepared_copy, check=False)
    assert refused.returncode == 2 and f"does not record cell {long} (it records: {short})" in refused.stderr


@pytest.mark.slow
def test_the_schedule_runs_past_the_stop_and_the_decay_end(prepared_copy):
    """A run stopping at 30 steps of a 40-step schedule whose decay ends at step 20: the logged LRs
    are the schedule's, computed here from the cosine formula by hand."""
    params = small_params(train={"tokens": 30 * STEP_TOKENS, "schedule_tokens": 40 * STEP_TOKENS, "decay_end_tokens": 20 * STEP_TOKENS,
                                 "warmup_fraction": 0.1, "max_lr": 2e-3})
    write_params(prepared_copy / "params.yaml", params)
    cell = cell_of(prepared_copy)
    rewarm(*train_args(cell), cwd=prepared_copy)
    lrs = [float(line.split("\t")[1]) for line in
           (prepared_copy / "runs" / cell / "dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()[1:]]
    # warm-up: 0.1 x 40 = 4 steps; cosine from step 4 (max) to step 19 (min 2e-4); 2e-4 from then on, until the stop at 30.
    expected = [2e-3 * (s + 1) / 5 for s in range(4)]
    expected += [2e-4 + 1.8e-3 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 15)) for s in range(4, 20)]
    expected += [2e-4] * 10
    assert lrs == pytest.approx(expected, rel=1e-12)


def train_directly(project: Path, run: cfg.TrainConfig, tmp_path: Path, poison_step: int | None, inf_loss_steps=(),
                   sigterm_step: int | None = None):
    """train_loop on the small project, with a NaN put into one gradient at `poison_step`, the forward
    pass's loss made infinite at the steps `inf_loss_steps`, and a SIGTERM sent to this process during
    step `sigterm_step` (counted from 0)."""
    from rewarm import checkpoints
    from rewarm.train import train_loop

    readers = {name: ShardReader(project / "data/tokens" / name / split) for name, split in
               (("downstream", "train"), ("upstream", "val"))}
    data = Data(train=readers["downstream"], val={"upstream": readers["upstream"]})
    model = checkpoints.load_model(project / "checkpoints/base/scratch")
    backward_calls = {"n": 0}
    accumulation = run.batch_sequences // run.micro_batch_sequences

    def poison(grad):
        step = backward_calls["n"] // accumulation
        backward_calls["n"] += 1
        return grad * float("nan") if step == poison_step else grad

    model.gpt_neox.embed_in.weight.register_hook(poison)
    forward_calls = {"n": 0}

    def overflow(module, args, kwargs, output):  # training passes only (evaluation runs in eval mode)
        if module.training:
            step = forward_calls["n"] // accumulation
            forward_calls["n"] += 1
            if step in inf_loss_steps:
                output.loss = output.loss * float("inf")
            if step == sigterm_step and forward_calls["n"] % accumulation == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return output

    model.register_forward_hook(overflow, with_kwargs=True)
    return train_loop(model, run, data, tmp_path / "out", tmp_path / "state", "fingerprint", label="poisoned")


def test_no_forward_pass_builds_a_key_value_cache(prepared_project, tmp_path):
    """Nothing in training or evaluation generates text, so no forward pass may build a key/value cache:
    Pythia's configuration asks for one (use_cache: true), about 0.3 GB a sequence at 410M that the
    evaluation batch (plan.eval_batch) does not count. Read from the model's own outputs."""
    from rewarm import checkpoints
    from rewarm.evaluate import mean_loss
    from rewarm.train import train_loop

    readers = {name: ShardReader(prepared_project / "data/tokens" / name / split) for name, split in
               (("downstream", "train"), ("upstream", "val"))}
    model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
    model.config.use_cache = True  # what Pythia's configuration asks for (rewarm's own directories now say false)
    caches = []
    model.register_forward_hook(lambda module, args, output: caches.append(output.past_key_values))
    run = cfg.TrainConfig(tokens=2 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=4, eval_every=1, eval_tokens=256,
                          save_every=100, device="cpu", precision="fp32")
    train_loop(model, run, Data(train=readers["downstream"], val={"upstream": readers["upstream"]}), tmp_path / "out",
               tmp_path / "state", "fingerprint", label="cache")
    mean_loss(model, readers["upstream"], 4, 2, torch.device("cpu"))
    assert len(caches) >= 2 * 2 + 3 and caches == [None] * len(caches)  # 2 steps of 2 micro-batches, 3 evaluations and more


@pytest.mark.fault
def test_a_nan_gradient_with_a_finite_loss_stops_the_run_naming_the_step(prepared_project, tmp_path):
    from rewarm.state import STATE_INDEX
    from rewarm.train import TrainingDiverged

    run = cfg.TrainConfig(tokens=10 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=4, eval_every=100, eval_tokens=256,
                          save_every=2, device="cpu", precision="fp32")
    with pytest.raises(TrainingDiverged, match="gradient norm is not finite at step 5 although the loss is"):
        train_directly(prepared_project, run, tmp_path, poison_step=5)
    # The state saved last is the one before the poisoned step: nothing after it was saved.
    assert json.loads((tmp_path / "state" / STATE_INDEX).read_text())["step"] == 4


@pytest.mark.fault
def test_fp16_skips_an_overflowing_step_and_lowers_the_loss_scale(prepared_project, tmp_path, caplog):
    """fp16 (emulated on the CPU, said so): dynamic loss scaling skips the poisoned step and the run
    goes on to its end; the skipped step is marked in the history."""
    import logging

    run = cfg.TrainConfig(tokens=10 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=4, eval_every=100, eval_tokens=256,
                          save_every=100, device="cpu", precision="fp16")
    with caplog.at_level(logging.WARNING, logger="rewarm.train"):
        final = train_directly(prepared_project, run, tmp_path, poison_step=5)
    assert final["step"] == 10 and math.isfinite(final["val/upstream/loss"])
    assert "precision fp16 on the CPU is emulated" in caplog.text
    assert "step 5: gradients overflowed in fp16; step skipped, loss scale lowered to 32768" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10]
    # As DeepSpeed under GPT-NeoX: the skipped step does not advance the schedule, so the update after it
    # runs at the skipped step's learning rate and every later one a step behind.
    schedule = Plan.of(run, 64, 0.0, world=1).schedule
    lines = (tmp_path / "out/dvclive/plots/metrics/train/lr.tsv").read_text().splitlines()
    logged = [float(line.split("\t")[1]) for line in lines[1:]]
    assert logged == pytest.approx([schedule(u) for u in (0, 1, 2, 3, 4, 5, 5, 6, 7, 8)], rel=1e-12)
    assert schedule(5) != schedule(6)


@pytest.mark.fault
def test_fp16_takes_an_infinite_loss_as_an_overflow_and_stops_only_at_the_minimum_scale(prepared_project, tmp_path, caplog):
    """In fp16 a loss that overflows in the forward pass is an overflow like any other: the step is
    skipped and the loss scale halved, and the run goes on. Overflowing at every step, the scale falls
    from 2^16 by halves; the overflow at scale 1 (DeepSpeed's min_loss_scale in the papers' runs) ends
    the run as diverged: 17 skipped steps."""
    import logging

    from rewarm.train import TrainingDiverged

    run = cfg.TrainConfig(tokens=20 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=4, eval_every=100, eval_tokens=256,
                          save_every=100, device="cpu", precision="fp16")
    with caplog.at_level(logging.WARNING, logger="rewarm.train"):
        final = train_directly(prepared_project, run, tmp_path / "once", poison_step=None, inf_loss_steps={3})
    assert final["step"] == 20 and math.isfinite(final["val/upstream/loss"])
    assert "step 3: the loss overflowed in fp16; step skipped, loss scale lowered to 32768" in caplog.text
    with pytest.raises(TrainingDiverged, match=r"step 16 overflowed in fp16 with the loss scale already at its minimum \(1"):
        train_directly(prepared_project, run, tmp_path / "always", poison_step=None, inf_loss_steps=set(range(20)))
    assert caplog.text.count("the loss overflowed in fp16") == 1 + 17  # 2^16 ... 2^0: 17 halvings


def whole_and_stopped(project: Path, tmp_path: Path, sigterm_step: int):
    """The 20-step test run (evaluated every 10) uninterrupted, and again stopped by a SIGTERM during
    step `sigterm_step` (from 0): (its settings, the uninterrupted run's final row, the stopped run's state)."""
    from rewarm.state import load_state

    run = cfg.TrainConfig(tokens=20 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=4, eval_every=10, eval_tokens=256,
                          save_every=100, device="cpu", precision="fp32")
    whole = train_directly(project, run, tmp_path / "whole", poison_step=None)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            train_directly(project, run, tmp_path / "stopped", poison_step=None, sigterm_step=sigterm_step)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stopped.value.code == 128 + signal.SIGTERM
    return run, whole, load_state(tmp_path / "stopped/state", "fingerprint")


@pytest.mark.fault
def test_a_stop_on_an_evaluation_step_saves_at_once_and_the_resumed_run_evaluates_it(prepared_project, tmp_path):
    """SIGTERM during the step whose end is an evaluation: the state is saved at once, without that
    evaluation (the job is killed some seconds after the signal; at paper scale an evaluation takes
    minutes), and the resumed run evaluates that step first: its curves and final metrics are the
    uninterrupted run's."""
    run, whole, saved = whole_and_stopped(prepared_project, tmp_path, sigterm_step=9)
    assert saved["step"] == 10 and saved["deferred"] and [row["step"] for row in saved["history"].evals] == [0]
    resumed = train_directly(prepared_project, run, tmp_path / "stopped", poison_step=None)
    assert resumed == whole
    assert [comparable(r) for r in read_rows(tmp_path / "stopped/out")] == [comparable(r) for r in read_rows(tmp_path / "whole/out")]
    for name in ("curves/upstream.csv", "dvclive/plots/metrics/train/lr.tsv", "dvclive/plots/metrics/val/upstream/loss.tsv"):
        assert (tmp_path / "stopped/out" / name).read_text() == (tmp_path / "whole/out" / name).read_text(), name


@pytest.mark.fault
def test_a_stop_in_the_last_step_keeps_the_finished_state_and_the_rerun_trains_nothing(prepared_project, tmp_path, caplog):
    """SIGTERM during the last step (SLURM signals a job that is finishing as readily as any): the run
    ends, its state at the last step is saved and the process exits as stopped; the retry resumes at
    the last step, trains nothing, and ends as the uninterrupted run."""
    import logging

    run, whole, saved = whole_and_stopped(prepared_project, tmp_path, sigterm_step=19)
    handler = signal.getsignal(signal.SIGTERM)
    assert saved["step"] == 20 and not saved["deferred"] and [row["step"] for row in saved["history"].evals] == [0, 10, 20]
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="rewarm.train"):
            resumed = train_directly(prepared_project, run, tmp_path / "stopped", poison_step=None, sigterm_step=0)
    finally:
        signal.signal(signal.SIGTERM, handler)
    # Resumed at the last step: no training forward pass ran (the one at step 0 would have sent a SIGTERM).
    assert "poisoned: resuming from step 20 of 20" in caplog.text and "SIGTERM" not in caplog.text
    assert resumed == whole
    assert [comparable(r) for r in read_rows(tmp_path / "stopped/out")] == [comparable(r) for r in read_rows(tmp_path / "whole/out")]


@pytest.mark.slow
@pytest.mark.fault
def test_a_stop_while_the_outputs_are_written_keeps_the_state_and_the_retry_rewrites_them(prepared_copy, reference_run):
    """SIGTERM after training, while the stage writes its outputs: the scheduler counts the job as
    cancelled and the workflow retries it with the outputs removed, so the state must outlive the job.
    It exits as stopped with the state of its last step kept, and the retry writes the outputs from it,
    the uninterrupted run's, without training again."""
    cell = cell_of(prepared_copy)
    driver = (  # the real command, with a SIGTERM to itself just before the run's last output (metrics.json)
        "import os, signal, sys\n"
        "import rewarm.train as t\n"
        "from rewarm.cli import main\n"
        "write = t.write_json\n"
        "def signalled(path, data):\n"
        "    if path.name == 'metrics.json':\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    write(path, data)\n"
        "t.write_json = signalled\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    stopped = subprocess.run([sys.executable, "-c", driver, *train_args(cell)], cwd=prepared_copy, env=run_env(),
                             capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    total = json.loads((reference_run / "metrics.json").read_text())["step"]
    assert f"SIGTERM: state saved at step {total}" in stopped.stderr
    assert json.loads((prepared_copy / "state/runs" / cell / "state.json").read_text())["step"] == total
    shutil.rmtree(prepared_copy / "runs" / cell)  # what Snakemake does to a failed job's outputs
    resumed = rewarm(*train_args(cell), cwd=prepared_copy)
    assert f"resuming from step {total} of {total}" in resumed.stderr
    run_dir = prepared_copy / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(reference_run)]
    assert (run_dir / "model/model.safetensors").read_bytes() == (reference_run / "model/model.safetensors").read_bytes()
    assert not (prepared_copy / "state/runs" / cell / "state.json").exists()  # a finished run's state is removed


@pytest.mark.parametrize("early_every, early_steps, stops, expected", [
    (None, 0, (), [10, 20, 30, 40]),                    # every eval_every steps and the last
    (2, 6, (), [2, 4, 6, 10, 20, 30, 40]),               # densely over the first 6 steps (the stability gap)
    (2, 6, (25,), [2, 4, 6, 10, 20, 25, 30, 40]),        # and where a shorter cell of the run stops
    (3, 9, (33, 5), [3, 5, 6, 9, 10, 20, 30, 33, 40]),
])
def test_evaluation_steps(early_every, early_steps, stops, expected):
    run = cfg.TrainConfig(tokens=40 * 512, batch_sequences=8, micro_batch_sequences=4, eval_every=10,
                          early_eval_every=early_every, early_eval_steps=early_steps)
    plan = Plan.of(run, 64, 0.0, world=1, stops=stops)
    assert [done for done in range(1, 41) if plan.evaluates(done, run)] == expected
    assert plan.evaluation_count(run) == 1 + len(expected)  # and step 0, for rewarm plan


class Killed(BaseException):
    """Stands for a SIGKILL at one point of save_state: nothing after it runs, no clean-up."""


def tiny_training_state():
    from rewarm.metrics import History

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer, History()


@pytest.mark.fault
@pytest.mark.parametrize("point", ["while writing the state", "before the index", "while writing the index", "before removing the old state"])
def test_a_kill_at_any_point_of_saving_leaves_a_loadable_state(tmp_path, monkeypatch, point):
    """The (state, index) pair is atomic: killed anywhere in save_state, the index names a complete
    state, the one before until the new index is in place; the next save removes what the kill left."""
    model, optimizer, history = tiny_training_state()
    state_dir = tmp_path / "state"
    state.save_state(state_dir, model, optimizer, 5, history, "run")

    def kill(*args, **kwargs):
        raise Killed(point)

    if point == "while writing the state":
        def half_written(obj, writer):  # part of the file reaches the disk, then the process dies
            writer.write(b"PK\x03\x04 half a zip file")
            raise Killed(point)
        monkeypatch.setattr(state.torch, "save", half_written)
    elif point == "before the index":
        monkeypatch.setattr(state, "write_json", kill)
    elif point == "while writing the index":
        def half_index(path, data):
            Path(f"{path}.partial-{os.getpid()}").write_text('{"step": 10, "file"')
            raise Killed(point)
        monkeypatch.setattr(state, "write_json", half_index)
    else:
        monkeypatch.setattr(state, "_prune_states", kill)
    with pytest.raises(Killed):
        state.save_state(state_dir, model, optimizer, 10, history, "run")
    monkeypatch.undo()
    expected = 10 if point == "before removing the old state" else 5
    assert state.load_state(state_dir, "run")["step"] == expected
    state.save_state(state_dir, model, optimizer, 15, history, "run")
    assert sorted(p.name for p in state_dir.iterdir()) == ["state-15.pt", "state.json"]
    loaded = state.load_state(state_dir, "run")
    assert loaded["step"] == 15 and torch.equal(loaded["model"]["weight"], model.weight.detach())


@pytest.mark.fault
def test_a_partial_of_a_live_process_is_left_alone(tmp_path):
    """Two savers never delete each other's partials: only those of processes that are gone go."""

    model, optimizer, history = tiny_training_state()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (state_dir / f"state-3.pt.partial-{live.pid}").write_bytes(b"in progress")
        (state_dir / "state-2.pt.partial-999999999").write_bytes(b"left by a dead process")
        state.save_state(state_dir, model, optimizer, 5, history, "run")
        assert sorted(p.name for p in state_dir.iterdir()) == [f"state-3.pt.partial-{live.pid}", "state-5.pt", "state.json"]
    finally:
        live.kill()
        live.wait()


def test_the_saved_checksum_is_the_files(tmp_path):
    """Hashed as it is written: the index's checksum is the file's own (hashlib over the file)."""
    import hashlib

    model, optimizer, history = tiny_training_state()
    state.save_state(tmp_path, model, optimizer, 7, history, "run")
    index = json.loads((tmp_path / "state.json").read_text())
    assert index["file"] == "state-7.pt"
    assert index["sha256"] == hashlib.sha256((tmp_path / "state-7.pt").read_bytes()).hexdigest()


def test_a_carried_optimizer_state_keeps_its_moments_and_takes_the_new_hyperparameters(prepared_project, tmp_path):
    """A continued cell starts from the earlier cell's Adam moments (what `optimizer: true` carries), with its
    own betas and weight decay; the state round-trips through a model directory with its checksum, and a
    state that does not fit the model, or an altered file, is refused naming the problem."""
    from rewarm import checkpoints, train

    model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
    before = cfg.TrainConfig(weight_decay=0.1, beta2=0.95)
    optimizer = train.build_optimizer(model, before, torch.device("cpu"))
    batch = torch.randint(0, 100, (2, 16))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    checkpoints.save_optimizer_state(optimizer.state_dict(), tmp_path)
    saved = checkpoints.load_optimizer_state(tmp_path)
    after = cfg.TrainConfig(weight_decay=0.0, beta2=0.99)
    fresh = train.build_optimizer(model, after, torch.device("cpu"))
    train.start_optimizer(fresh, saved, "cell")
    carried = fresh.state_dict()
    assert [g["weight_decay"] for g in carried["param_groups"]] == [0.0, 0.0]  # the new cell's own
    assert {tuple(g["betas"]) for g in carried["param_groups"]} == {(0.9, 0.99)}
    for index, moments in optimizer.state_dict()["state"].items():
        assert torch.equal(carried["state"][index]["exp_avg"], moments["exp_avg"])
        assert torch.equal(carried["state"][index]["exp_avg_sq"], moments["exp_avg_sq"])
    wrong = {"state": {0: {"exp_avg": torch.zeros(3, 3), "exp_avg_sq": torch.zeros(3, 3), "step": torch.tensor(1.0)}}}
    with pytest.raises(ValueError, match="does not fit this model"):
        train.start_optimizer(train.build_optimizer(model, after, torch.device("cpu")), wrong, "cell")
    with open(tmp_path / checkpoints.OPTIMIZER_STATE, "ab") as f:
        f.write(b"x")
    with pytest.raises(checkpoints.CheckpointError, match="does not match its checksum"):
        checkpoints.load_optimizer_state(tmp_path)


# -- FSDP and several nodes -----------------------------------------------------------------------

FSDP_TOLERANCE = 1e-4
"""FSDP against DDP, and a sharded state resumed on another number of processes: the same arithmetic
in another order (reduce-scatter instead of all-reduce, other shard boundaries). Over the test cell's
40 steps on CPU float32 the losses agree to about 1e-6 relative; 1e-4 leaves room and would still
catch a wrong batch, learning rate or shard (those move the loss by 1e-2 or more)."""


def fsdp_project(prepared_project: Path, where: Path) -> Path:
    project = where / "project"
    shutil.copytree(prepared_project, project, symlinks=True)
    params = yaml_load(project / "params.yaml")
    params["train"]["parallel"] = "fsdp"
    write_params(project / "params.yaml", params)
    return project


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def fsdp_env() -> dict:
    return {**run_env(), "REWARM_MAX_SHARD_SIZE": "100KB"}  # the tiny model's weights in several files


@pytest.fixture(scope="module")
def fsdp_run(prepared_project, tmp_path_factory):
    """The test cell under FSDP over 2 CPU processes (torchrun, gloo), uninterrupted."""
    project = fsdp_project(prepared_project, tmp_path_factory.mktemp("fsdp"))
    cell = cell_of(project)
    result = subprocess.run(torchrun_command(cell), cwd=project, env=fsdp_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return project / "runs" / cell


def assert_close_runs(a_dir: Path, b_dir: Path, rel: float) -> None:
    a_rows, b_rows = read_rows(a_dir), read_rows(b_dir)
    assert [r["step"] for r in a_rows] == [r["step"] for r in b_rows] == [0, 10, 20, 30, 40]
    for a, b in zip(a_rows, b_rows):
        for key in ("train_loss", "lr", "val/upstream/loss", "val/downstream/loss"):
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=rel), (a["step"], key)


def test_fsdp_matches_ddp_and_saves_a_sharded_hf_model(fsdp_run, torchrun_run):
    """FSDP and DDP over the same 2 processes train the same run up to floating-point order; the final
    model is gathered whole into a Hugging Face directory, split into several safetensors files with
    their index, that transformers loads; its weights are DDP's within the same tolerance."""
    from rewarm.checkpoints import verify_weights

    assert_close_runs(fsdp_run, torchrun_run, FSDP_TOLERANCE)
    model_dir = fsdp_run / "model"
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and not (model_dir / "model.safetensors").exists()
    verify_weights(model_dir)  # the checksums written beside them
    fsdp = AutoModelForCausalLM.from_pretrained(str(model_dir))
    ddp = AutoModelForCausalLM.from_pretrained(str(torchrun_run / "model"))
    fsdp_weights, ddp_weights = fsdp.state_dict(), ddp.state_dict()
    assert fsdp_weights.keys() == ddp_weights.keys()
    for name, value in ddp_weights.items():
        torch.testing.assert_close(fsdp_weights[name], value, rtol=FSDP_TOLERANCE, atol=FSDP_TOLERANCE, msg=name)


def test_under_fsdp_only_rank_0_reads_and_hashes_the_base_weights(prepared_project, fsdp_run, tmp_path):
    """Under FSDP the other processes build the model on the meta device and receive their shards from
    rank 0 (at 6.9B, 27.6 GB of host memory once per node instead of once per GPU): here rank 1 is
    not allowed to load or hash the weights, and the run is the same, bit for bit, as the plain one."""
    project = fsdp_project(prepared_project, tmp_path)
    cell = cell_of(project)
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import os, sys\n"
        "from rewarm import checkpoints\n"
        "from rewarm.cli import main\n"
        "def refused(*args, **kwargs):\n"
        "    raise AssertionError('rank ' + os.environ['RANK'] + ' read the base weights')\n"
        "if os.environ['RANK'] != '0':\n"
        "    checkpoints.load_model = checkpoints.weights_fingerprint = checkpoints.verify_weights = refused\n"
        "sys.exit(main(sys.argv[1:]))\n")
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", str(driver), *train_args(cell)]
    result = subprocess.run(command, cwd=project, env=fsdp_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = project / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(fsdp_run)]
    for weights in sorted((fsdp_run / "model").glob("*.safetensors")):
        assert (run_dir / "model" / weights.name).read_bytes() == weights.read_bytes(), weights.name


@pytest.mark.slow
@pytest.mark.fault
def test_fsdp_killed_run_resumes_bit_exact_and_on_another_process_count(tmp_path, prepared_project, fsdp_run):
    """SIGKILL to the whole torchrun job after a sharded save: resumed on the same 2 processes the run
    ends bit-identical to the uninterrupted one; resumed on 1 process (a pre-empted job back on a
    smaller allocation), torch.distributed.checkpoint reshards the state and the run ends within
    FSDP_TOLERANCE of it."""
    project = fsdp_project(prepared_project, tmp_path)
    cell = cell_of(project)
    state_dir = project / "state/runs" / cell
    with open(tmp_path / "killed.log", "w") as log:
        agent = subprocess.Popen(torchrun_command(cell), cwd=project, env=fsdp_env(), stderr=log)
        deadline = time.monotonic() + 300
        while not ((state_dir / "state.json").exists() and json.loads((state_dir / "state.json").read_text())["step"] >= 10):
            assert agent.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        kill_job(agent)
    index = json.loads((state_dir / "state.json").read_text())
    assert index["sharded"] and index["processes"] == 2 and 10 <= index["step"] < 40
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "extra.pt"} <= set(index["files"])
    assert not (project / "runs" / cell / "metrics.json").exists()
    other = tmp_path / "other"
    shutil.copytree(project, other, symlinks=True)

    resumed = subprocess.run(torchrun_command(cell), cwd=project, env=fsdp_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and f"resuming from step {index['step']}" in resumed.stderr, resumed.stderr[-3000:]
    run_dir = project / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(fsdp_run)]
    for name in json.loads((fsdp_run / "model/model.safetensors.index.json").read_text())["weight_map"].values():
        assert (run_dir / "model" / name).read_bytes() == (fsdp_run / "model" / name).read_bytes()

    alone = rewarm(*train_args(cell), cwd=other)
    assert f"resuming from step {index['step']}" in alone.stderr and "resumed on 1: resharded" in alone.stderr
    assert_close_runs(other / "runs" / cell, fsdp_run, FSDP_TOLERANCE)
    assert not (other / "state/runs" / cell / "state.json").exists()  # the finished run removed its state


@pytest.mark.slow
def test_two_agents_rendezvous_like_two_nodes(tmp_path, prepared_project, torchrun_run):
    """Two torchrun agents of one process each, rendezvousing over loopback (c10d) as two nodes of a
    SLURM job do on the first node: the same run, bit for bit, as one agent with two processes."""
    import socket

    project = tmp_path / "project"
    shutil.copytree(prepared_project, project, symlinks=True)
    cell = cell_of(project)
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "rewarm-test", "-m", "rewarm", *train_args(cell)]
    # One thread per process, as torchrun sets for several processes per agent (not for one): the
    # same matrix-product summation order as the 2-process agent.
    env = {**run_env(), "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    errors = [agent.communicate(timeout=600)[1] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(e[-2000:] for e in errors)
    run_dir = project / "runs" / cell
    assert [comparable(r) for r in read_rows(run_dir)] == [comparable(r) for r in read_rows(torchrun_run)]
    assert (run_dir / "model/model.safetensors").read_bytes() == (torchrun_run / "model/model.safetensors").read_bytes()


@pytest.fixture
def one_process_group():
    """A process group of this one process (FSDP shards over it), destroyed afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def tiny_sharded_model():
    """A two-layer GPT-NeoX sharded with FSDP in the one-process group, and its optimizer."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from rewarm import train

    config = GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=32)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    runtime.shard_model(model, "fp32")
    return model, train.build_optimizer(model, cfg.TrainConfig(), torch.device("cpu"))


@pytest.mark.fault
@pytest.mark.parametrize("point", ["while writing the shards", "before the index", "before removing the old state"])
def test_a_kill_while_saving_a_sharded_state_leaves_the_previous_one(tmp_path, monkeypatch, one_process_group, point):
    """save_sharded_state is atomic as save_state is: killed anywhere, the index names a complete state
    that loads into the sharded model; a shard altered afterwards is refused by name."""
    import torch.distributed.checkpoint as dcp

    model, optimizer = tiny_sharded_model()
    state_dir = tmp_path / "state"

    def step() -> None:
        batch = torch.randint(0, 64, (2, 8))
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    state.save_sharded_state(state_dir, model, optimizer, 5, metrics.History(), "run")
    at_five = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
    step()

    def kill(*args, **kwargs):
        raise Killed(point)

    if point == "while writing the shards":
        real_save = dcp.save
        def half_written(state, checkpoint_id):  # some shards reach the disk, then the process dies
            real_save(state, checkpoint_id=checkpoint_id)
            (Path(checkpoint_id) / ".metadata").write_bytes(b"half")
            raise Killed(point)
        monkeypatch.setattr(dcp, "save", half_written)
    elif point == "before the index":
        monkeypatch.setattr(state, "write_json", kill)
    else:
        monkeypatch.setattr(state, "_prune_states", kill)
    with pytest.raises(Killed):
        state.save_sharded_state(state_dir, model, optimizer, 10, metrics.History(), "run")
    monkeypatch.undo()
    loaded = state.load_sharded_state(state_dir, "run", model, optimizer)
    if point == "before removing the old state":
        assert loaded["step"] == 10
    else:
        assert loaded["step"] == 5
        for name, value in model.state_dict().items():
            assert torch.equal(value.full_tensor(), at_five[name]), name
        # the retry runs on from step 5 and saves at step 10 again, over whatever the kill left there
        state.save_sharded_state(state_dir, model, optimizer, 10, metrics.History(), "run")
        assert state.load_sharded_state(state_dir, "run", model, optimizer)["step"] == 10
    state.save_sharded_state(state_dir, model, optimizer, 15, metrics.History(), "run")
    assert sorted(p.name for p in state_dir.iterdir()) == ["state-15", "state.json"]
    shard = state_dir / "state-15" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte altered
    shard.write_bytes(bytes(data))
    with pytest.raises(state.StateError, match=r"state-15: __0_0\.distcp: checksum does not match"):
        state.load_sharded_state(state_dir, "run", model, optimizer)


@pytest.mark.fault
def test_a_sharded_state_that_cannot_be_written_is_said_so(tmp_path, one_process_group):
    """Under FSDP, distributed checkpoint's failure to write (here a file size limit, as a full disk does) is
    a StateWriteError naming the state directory and the system's reason; the state saved before stays loadable."""
    import resource

    model, optimizer = tiny_sharded_model()
    state_dir = tmp_path / "state"
    state.save_sharded_state(state_dir, model, optimizer, 5, metrics.History(), "run")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, hard))  # the shards are larger
    try:
        with pytest.raises(state.StateWriteError) as caught:
            state.save_sharded_state(state_dir, model, optimizer, 10, metrics.History(), "run")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert str(caught.value).startswith(f"{state_dir}: writing the sharded training state of step 10 failed (File too large)")
    assert state.load_sharded_state(state_dir, "run", model, optimizer)["step"] == 5


def test_fsdp_reduce_scatters_every_micro_batch_and_holds_no_whole_gradients(prepared_project, one_process_group, tmp_path,
                                                                            monkeypatch):
    """FSDP with gradient accumulation: each micro-batch's gradients are reduce-scattered into the
    parameters' shards at once. With the sync switched off until the last micro-batch, FSDP would hold
    every parameter's whole gradient (in fp32, the reduce dtype) across the micro-batches: 4 bytes a
    parameter more per GPU than `plan` counts, 27 GB at 6.9B. Seen from the optimizer's (sharded)
    parameters: at every micro-batch after a step's first, each already holds its sharded gradient."""
    from torch.distributed.tensor import DTensor

    from rewarm import checkpoints, train

    readers = {name: ShardReader(prepared_project / "data/tokens" / name / split) for name, split in
               (("downstream", "train"), ("upstream", "val"))}
    model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
    run = cfg.TrainConfig(tokens=2 * STEP_TOKENS, batch_sequences=8, micro_batch_sequences=2, eval_every=100, eval_tokens=256,
                          save_every=100, device="cpu", precision="fp32", parallel="fsdp")
    optimizers = []
    build = train.build_optimizer
    monkeypatch.setattr(train, "build_optimizer", lambda *args: optimizers.append(build(*args)) or optimizers[-1])
    held = []

    def sharded_gradients(module, args, kwargs):  # before each training forward pass, after the previous backward
        if module.training:
            grads = [p.grad for group in optimizers[0].param_groups for p in group["params"]]
            held.append("none" if all(g is None for g in grads) else
                        "sharded" if all(isinstance(g, DTensor) for g in grads) else "some")

    model.register_forward_pre_hook(sharded_gradients, with_kwargs=True)
    train.train_loop(model, run, Data(train=readers["downstream"], val={"upstream": readers["upstream"]}), tmp_path / "out",
                     tmp_path / "state", "fingerprint", label="fsdp")
    assert held == ["none", "sharded", "sharded", "sharded"] * 2  # 2 steps of 4 micro-batches; zeroed after each step


def test_fsdp_computes_in_half_precision_throughout_where_ddp_autocast_keeps_the_residual_stream_in_fp32(
        prepared_project, one_process_group):
    """Where FSDP and DDP differ in bf16 or fp16: FSDP's MixedPrecisionPolicy gathers the weights in half
    precision, so the embeddings, LayerNorms and the residual stream are half precision too (as GPT-NeoX's
    fp16 under DeepSpeed, the papers' runs: a half-precision model with float32 master weights), while
    DDP's autocast runs only the matrix products in half precision and keeps the residual stream in
    float32. Seen from a transformer block's output, in bf16 on the CPU."""
    from rewarm import checkpoints
    from rewarm.runtime import autocast_for, shard_model

    batch = torch.randint(0, 100, (2, 16))
    streams = {}
    for name in ("ddp", "fsdp"):
        model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
        block = model.gpt_neox.layers[0]

        def record(module, args, output, name=name) -> None:  # returns None: the output stays as it is
            streams.setdefault(name, (output[0] if isinstance(output, tuple) else output).dtype)

        block.register_forward_hook(record)
        if name == "fsdp":
            shard_model(model, "bf16")
            model(input_ids=batch, use_cache=False)
        else:
            with autocast_for("bf16", torch.device("cpu")):
                model(input_ids=batch, use_cache=False)
    assert streams == {"ddp": torch.float32, "fsdp": torch.bfloat16}


def test_a_carried_optimizer_state_round_trips_through_fsdp(prepared_project, one_process_group):
    """A continued cell under FSDP: the optimizer state gathered from the shards is the one a plain
    optimizer gives after the same step (parameters by index, whole tensors), and sharded into a
    fresh run it keeps its moments and takes that run's own hyperparameters."""
    from rewarm import checkpoints, train

    before, after = cfg.TrainConfig(weight_decay=0.1, beta2=0.95), cfg.TrainConfig(weight_decay=0.0, beta2=0.99)
    batch = torch.randint(0, 100, (2, 16))
    models, optimizers = [], []
    for shard in (False, True):
        model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
        if shard:
            runtime.shard_model(model, "fp32")
        optimizer = train.build_optimizer(model, before, torch.device("cpu"))
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        models.append(model)
        optimizers.append(optimizer)
    plain = optimizers[0].state_dict()
    gathered = train.full_optimizer_state(models[1], optimizers[1])
    assert gathered["param_groups"] == plain["param_groups"] and gathered["state"].keys() == plain["state"].keys()
    for index, moments in plain["state"].items():
        for key, value in moments.items():
            torch.testing.assert_close(gathered["state"][index][key], value, rtol=1e-5, atol=1e-7, msg=f"{index} {key}")

    fresh_model = checkpoints.load_model(prepared_project / "checkpoints/base/scratch")
    runtime.shard_model(fresh_model, "fp32")
    fresh = train.build_optimizer(fresh_model, after, torch.device("cpu"))
    train.start_sharded_optimizer(fresh_model, fresh, plain, "cell")
    carried = train.full_optimizer_state(fresh_model, fresh)
    assert [g["weight_decay"] for g in carried["param_groups"]] == [0.0, 0.0]  # the new run's own
    assert [tuple(g["betas"]) for g in carried["param_groups"]] == [(0.9, 0.99)] * 2, carried["param_groups"]
    for index, moments in plain["state"].items():
        assert torch.equal(carried["state"][index]["exp_avg"], moments["exp_avg"])
        assert torch.equal(carried["state"][index]["exp_avg_sq"], moments["exp_avg_sq"])


@pytest.mark.slow
def test_activation_checkpointing_trains_bit_for_bit_as_without(prepared_copy):
    """`train.activation_checkpointing`: every block's activations recomputed in the backward (the log
    says on how many blocks); on the CPU the curve and the weights are those of the run without it."""
    runs = {}
    for on in (False, True):
        write_params(prepared_copy / "params.yaml", small_params(train={"tokens": 4096, "eval_every": 4, "activation_checkpointing": on}))
        cell = cell_of(prepared_copy)
        out = f"runs-{on}/{cell}"
        result = rewarm(*train_args(cell, out=out, state=f"state-{on}/{cell}"), cwd=prepared_copy)
        assert ("activation checkpointing on 2 transformer blocks" in result.stderr) == on, result.stderr[-2000:]
        rows = [json.loads(line) for line in (prepared_copy / out / "metrics.jsonl").read_text().splitlines()]
        runs[on] = ([{k: v for k, v in row.items() if k != "tokens_per_s"} for row in rows],
                    load_file(str(prepared_copy / out / "model/model.safetensors")))
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 3
    assert runs[True][1].keys() == runs[False][1].keys()
    assert all(torch.equal(runs[True][1][k], runs[False][1][k]) for k in runs[False][1])
