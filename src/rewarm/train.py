"""The training loop, shared by re-warm runs (`train`) and the demo's pre-training (`pretrain`).

One process, or several under `torchrun` (DistributedDataParallel). Each step takes the
next global batch of `batch_sequences` sequences (a share from the upstream split when
replaying), splits it across processes and micro-batches, accumulates gradients, clips
and updates with the step's learning rate. The data order is a pure function of the
step, so the resumable state (model, optimizer, step, RNG, metric history; saved
atomically every `save_every` steps) is all a killed run needs to end exactly where
the uninterrupted run would (bit-exact on CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from rewarm import config as cfg
from rewarm import grid, schedules
from rewarm.checkpoints import unwrap
from rewarm.data.shards import DATA_ORDER, ShardReader, ShuffledStream, VerifiedStamp
from rewarm.data.sources import file_sha256
from rewarm.evaluate import autocast_for, mean_loss, perplexity, pick_device, resolve_precision
from rewarm.io import FAILURE, PARTIAL, atomic_dir, check_free_space, exclusive, load_tensors, remove_stale_partials, write_json, write_text

log = logging.getLogger(__name__)

STATE_FILE = "state-{step}.pt"
"""A saved state's file, named by its step; the index names the one to load."""
STATE_INDEX = "state.json"
STOPS = "stops"
"""A run's records at the stops of its shorter cells: step<N>/model/, step<N>/history.json, stops.json."""
STOP_HISTORY = "history.json"
VERIFIED = "verified-shards.json"
"""In a run's state directory: the shards rank 0 has verified (`VerifiedStamp`)."""


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite."""


class StateError(ValueError):
    """A saved training state that is truncated, altered or unreadable."""


@dataclass
class Data:
    """What a run reads: its training split, an optional replay split, validation samples."""

    train: ShardReader
    val: dict[str, ShardReader]
    replay: ShardReader | None = None
    replay_fraction: float = 0.0


@dataclass
class Plan:
    """A run's derived quantities, fixed before the first step."""

    total_steps: int
    """Where the run stops (the schedule may be laid out further: schedule_steps)."""
    warmup_steps: int
    replay_fraction: float
    batch_sequences: int
    accumulation: int
    eval_sequences: int
    schedule: Callable[[int], float]
    extra_eval_steps: frozenset = frozenset()
    """Steps evaluated besides the regular ones: where shorter cells of the same run stop."""

    @classmethod
    def of(cls, run: cfg.Optimization, seq_len: int, replay_fraction: float, world: int, stops=()) -> "Plan":
        steps = cfg.total_steps(run, seq_len)
        length = cfg.schedule_steps(run, seq_len)
        warmup = cfg.warmup_steps(run, seq_len)
        per_process = run.batch_sequences // world
        if run.batch_sequences % world or per_process % run.micro_batch_sequences:
            raise cfg.ConfigError(
                f"batch_sequences {run.batch_sequences} does not split into {world} processes x micro-batches of "
                f"{run.micro_batch_sequences}"
            )
        neox = run.schedule in schedules.GPT_NEOX  # GPT-NeoX's own warm-up: a real number of steps
        schedule = schedules.build(
            run.schedule, max_lr=run.max_lr, min_lr=cfg.min_lr(run), total_steps=length,
            decay_steps=cfg.decay_steps(run, seq_len), warmup_steps=cfg.warmup_exact(run, seq_len) if neox else warmup,
            decay_fraction=run.decay_fraction, decay_shape=run.decay_shape, constant_lr=run.constant_lr,
            cooldown_end_fraction=run.cooldown_end_fraction, constant_end_fraction=run.constant_end_fraction,
            timescale=run.timescale,
        )
        return cls(
            total_steps=steps,
            warmup_steps=warmup,
            replay_fraction=replay_fraction,
            batch_sequences=run.batch_sequences,
            accumulation=per_process // run.micro_batch_sequences,
            eval_sequences=max(1, run.eval_tokens // seq_len),
            schedule=schedule,
            extra_eval_steps=frozenset(stops),
        )

    @property
    def replays(self) -> bool:
        return cfg.replay_before(self.replay_fraction, self.batch_sequences, self.total_steps) > 0

    @property
    def uniform(self) -> bool:
        """Whether every step replays the same number of sequences (a whole number of a batch)."""
        return cfg.replay_is_whole(self.replay_fraction, self.batch_sequences)

    def replay_in(self, step: int) -> int:
        """Upstream sequences in the global batch of `step` (exact over the run: config.replay_before)."""
        return cfg.replay_in_step(self.replay_fraction, self.batch_sequences, step)

    def evaluates(self, done: int, run: cfg.Optimization) -> bool:
        """Whether the step count `done` is evaluated: every eval_every steps, densely during the
        first early_eval_steps (the stability gap), at the stops of shorter cells, and at the end."""
        early = run.early_eval_every is not None and done <= run.early_eval_steps and done % run.early_eval_every == 0
        return done % run.eval_every == 0 or early or done in self.extra_eval_steps or done == self.total_steps

    def evaluation_count(self, run: cfg.Optimization) -> int:
        """How many evaluations the run makes: at step 0 and at each step `evaluates` names (counted
        without visiting every step, for `rewarm plan` on runs of 100,000 steps)."""
        end = self.total_steps
        steps = set(range(run.eval_every, end + 1, run.eval_every)) | {s for s in self.extra_eval_steps if s <= end} | {end}
        if run.early_eval_every is not None:
            steps |= set(range(run.early_eval_every, min(run.early_eval_steps, end) + 1, run.early_eval_every))
        return 1 + len(steps - {0})


@dataclass
class History:
    """Everything logged so far; kept in the state so a resumed run rewrites identical logs."""

    steps: list[dict] = field(default_factory=list)
    """Per optimizer step: step, lr, train_loss."""
    evals: list[dict] = field(default_factory=list)
    """Per evaluation: step, tokens, lr, train_loss, validation losses and perplexities, tokens_per_s."""


# -- devices and processes ----------------------------------------------------------------------


def process_rank() -> int:
    """This process's rank under torchrun (0 when run alone): rank 0 writes the outputs."""
    return int(os.environ.get("RANK", "0"))


def setup_device(choice: str, group: bool = False) -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun, one process per GPU (or CPU process with gloo).
    `group`: a process group even for one process (FSDP shards over one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = process_rank()
    use_cuda = pick_device(choice).type == "cuda"
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if world > 1:
            dist.init_process_group(backend=backend)
        elif group:  # one process, no torchrun: a store of its own, no port to agree on
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", local), rank, world
    return torch.device("cpu"), rank, world


def build_optimizer(model, run: cfg.Optimization, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused kernels, on GPU and CPU alike) or RAdam; no weight decay on biases and LayerNorm
    weights, as in GPT-NeoX."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (run.beta1, run.beta2)
    if run.optimizer == "radam":
        return torch.optim.RAdam(groups, lr=run.max_lr, betas=betas, eps=run.eps, decoupled_weight_decay=True)
    return torch.optim.AdamW(groups, lr=run.max_lr, betas=betas, eps=run.eps, fused=device.type in ("cuda", "cpu"))


def grad_scaler(precision: str, device: torch.device, window: int = 2000) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 (a step whose gradients overflow is skipped and the scale halved; the
    scale doubles after `window` steps without overflow); disabled, a pass-through, for the other precisions.
    Against DeepSpeed's scaler (the papers' runs): the same start (2^16), halving and doubling; torch has no
    hysteresis (DeepSpeed halves only at the 2nd overflow in a row) and no minimum scale."""
    return torch.amp.GradScaler(device.type, growth_interval=window, enabled=precision == "fp16")


def shard_model(model, precision: str) -> None:
    """FSDP (`fully_shard`): each transformer block a unit, then the root (embeddings, final LayerNorm,
    output layer). Parameters stay float32 shards (the optimizer's copy); with bf16 or fp16 each unit
    is gathered in that dtype for its forward and backward, and gradients are reduce-scattered in
    float32 (MixedPrecisionPolicy), as DDP's bf16 autocast computes and all-reduces them."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for block in unwrap(model).gpt_neox.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def gather_model(model):
    """The whole model on rank 0's CPU as a plain (unsharded) module, gathered from the FSDP shards;
    a collective: every process calls it, the others get None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import GPTNeoXForCausalLM

    full = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):
        plain = GPTNeoXForCausalLM._from_config(unwrap(model).config, dtype=torch.float32)
    plain.load_state_dict(full, assign=True)
    return plain


# -- state ----------------------------------------------------------------------------------------


class _HashingWriter:
    """A file that hashes what is written to it: the state's checksum without reading it back."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _unsharded_state(step: int, history: History, fingerprint: str, scaler) -> dict:
    """A state's part besides the model and optimizer: step, RNG (rank 0's), metric history, loss scale."""
    return {"step": step, "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": json.dumps(dataclasses.asdict(history)), "fingerprint": fingerprint,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}}


def save_state(state_dir: Path, model, optimizer, step: int, history: History, fingerprint: str, scaler=None) -> None:
    """Atomically, as a pair: the state goes to its own file, `state-<step>.pt` (written under a
    temporary name, hashed as it is written, fsynced, renamed), then the index, renamed into place,
    names that file and its checksum, then older state files are removed. A kill at any point
    leaves the index naming a complete state (the previous one until the index is replaced); what
    a kill leaves behind (partials of a process that is gone, older states) the next save removes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(state_dir, f"*{PARTIAL}*")
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             **_unsharded_state(step, history, fingerprint, scaler)}
    name = STATE_FILE.format(step=step)
    tmp = state_dir / f"{name}{PARTIAL}{os.getpid()}"
    with open(tmp, "wb") as f:
        writer = _HashingWriter(f)
        torch.save(state, writer)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_dir / name)
    write_json(state_dir / STATE_INDEX, {"step": step, "fingerprint": fingerprint, "file": name, "sha256": writer.digest.hexdigest()})
    _prune_states(state_dir, keep=name)


def _state_files(state_dir: Path) -> list[Path]:
    """Saved states: files (`state-<step>.pt`) and sharded directories (`state-<step>`), not partials."""
    return sorted(p for p in state_dir.glob(SHARDED_STATE.format(step="*")) if PARTIAL not in p.name)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune_states(state_dir: Path, keep: str) -> None:
    """Remove the states the index no longer names."""
    for path in _state_files(state_dir):
        if path.name != keep:
            _remove(path)


def _read_index(state_dir: Path, fingerprint: str, sharded: bool) -> dict | None:
    """The state index if it names a state of this very run, saved the same way (sharded or not);
    None (with a warning from rank 0 when there is another run's) to start afresh."""
    index_path = state_dir / STATE_INDEX
    if not index_path.exists():
        return None
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise StateError(f"{index_path}: unreadable state index ({error})") from None
    if index.get("fingerprint") != fingerprint or bool(index.get("sharded")) != sharded:
        if process_rank() == 0:
            log.warning("%s: saved state belongs to other settings or inputs; starting afresh", state_dir)
        return None
    return index


def load_state(state_dir: Path, fingerprint: str) -> dict | None:
    """The saved state if there is one for this very run; None to start afresh."""
    index_path = state_dir / STATE_INDEX
    index = _read_index(state_dir, fingerprint, sharded=False)
    if index is None:
        return None
    state_path = state_dir / str(index.get("file"))
    if not state_path.is_file() or file_sha256(state_path) != index.get("sha256"):
        raise StateError(f"{state_path}: checksum does not match {index_path} (truncated or altered state); delete {state_dir} to start afresh")
    state = load_tensors(state_path)
    state["history"] = History(**json.loads(state["history"]))
    return state


SHARDED_STATE = "state-{step}"
"""A sharded state (FSDP): a directory written by every process through torch.distributed.checkpoint."""
SHARDED_EXTRA = "extra.pt"
"""In a sharded state: what is not sharded (step, history, RNG, loss scale), written by rank 0."""


def save_sharded_state(state_dir: Path, model, optimizer, step: int, history: History, fingerprint: str, scaler=None) -> None:
    """FSDP's resumable state, atomically as `save_state`'s: every process writes its shards of the
    model and optimizer (torch.distributed.checkpoint) into `state-<step>.partial`, and hashes its own
    files; rank 0 adds the rest (`extra.pt`), renames the directory into place, then the index,
    which names it and every file's checksum, then removes older states. A kill at any point leaves
    the index naming a complete state. A collective: every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank = dist.get_rank()
    name = SHARDED_STATE.format(step=step)
    tmp = state_dir / f"{name}{PARTIAL}sharded"
    if rank == 0:
        state_dir.mkdir(parents=True, exist_ok=True)
        for stale in state_dir.glob(f"*{PARTIAL}sharded"):  # killed saves' (none is being written: this run holds the lock)
            shutil.rmtree(stale, ignore_errors=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(unwrap(model), optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp))
    own = {path.name: file_sha256(path) for path in sorted(tmp.glob(f"__{rank}_*"))}
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, own)
    if rank == 0:
        with open(tmp / SHARDED_EXTRA, "wb") as f:
            torch.save(_unsharded_state(step, history, fingerprint, scaler), f)
            f.flush()
            os.fsync(f.fileno())
        files = {k: v for part in every for k, v in part.items()}
        files.update({n: file_sha256(tmp / n) for n in (".metadata", SHARDED_EXTRA)})
        os.replace(tmp, state_dir / name)
        write_json(state_dir / STATE_INDEX, {"step": step, "fingerprint": fingerprint, "file": name, "sharded": True,
                                             "processes": dist.get_world_size(), "files": files})
        _prune_states(state_dir, keep=name)
    dist.barrier()


def load_sharded_state(state_dir: Path, fingerprint: str, model, optimizer) -> dict | None:
    """Load a sharded state into the FSDP `model` and its `optimizer` (torch.distributed.checkpoint
    reshards it when it was saved by another number of processes); return the rest as `load_state`
    does, or None to start afresh. Each process verifies its share of the files' checksums.
    A collective: every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    index_path = state_dir / STATE_INDEX
    index = _read_index(state_dir, fingerprint, sharded=True)
    if index is None:
        return None
    path = state_dir / str(index["file"])
    rank, world = dist.get_rank(), dist.get_world_size()
    names = sorted(index["files"])
    bad = [n for n in names[rank::world] if not (path / n).is_file() or file_sha256(path / n) != index["files"][n]]
    every: list = [None] * world
    dist.all_gather_object(every, bad)
    bad = sorted(n for part in every for n in part)
    if bad:
        raise StateError(f"{path}: {', '.join(bad)}: checksum does not match {index_path} (truncated or altered state); "
                         f"delete {state_dir} to start afresh")
    model_state, optimizer_state = get_state_dict(unwrap(model), optimizer)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(loaded, checkpoint_id=str(path))
    set_state_dict(unwrap(model), optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
    state = load_tensors(path / SHARDED_EXTRA)
    state["history"] = History(**json.loads(state["history"]))
    if index.get("processes") != world and rank == 0:
        log.warning("%s: state saved by %s processes, resumed on %d: resharded; the run continues as it would have "
                    "up to floating-point order (the order of the gradient reductions changes)", state_dir, index.get("processes"), world)
    return state


def run_fingerprint(run: cfg.Optimization, base_weights: str, data: Data, extra: dict | None = None) -> str:
    """Identifies a run: its settings, its starting weights and its data (shard checksums)."""
    manifests = {"train": data.train.manifest, "replay": data.replay.manifest if data.replay else None,
                 **{f"val/{k}": v.manifest for k, v in sorted(data.val.items())}}
    shards = {k: [s["sha256"] for s in m["shards"]] if m else None for k, m in manifests.items()}
    payload = {"run": cfg.to_dict(run), "base": base_weights, "shards": shards, "extra": extra or {}, "data_order": DATA_ORDER}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Preemption:
    """Notes a SIGTERM (a scheduler pre-empting the job) so that the loop saves its state at the
    end of the current step and exits, instead of dying mid-step."""

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._note)
        except ValueError:  # not the main thread: signals stay as they are
            pass

    def _note(self, signum, frame) -> None:
        self.requested = True


# -- metrics --------------------------------------------------------------------------------------


class MetricsLog:
    """Plain JSON lines (one row per evaluation) and DVCLive (lr and train loss per step,
    validation metrics per evaluation), so `dvc plots` and `dvc exp show` read them."""

    def __init__(self, out_dir: Path, history: History):
        from dvclive import Live

        out_dir.mkdir(parents=True, exist_ok=True)
        self.history = history
        self.curves = out_dir / "curves"
        self.jsonl = out_dir / "metrics.jsonl"
        self.live = Live(dir=str(out_dir / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.jsonl.write_text("".join(json.dumps(row) + "\n" for row in history.evals))
        evals = {row["step"]: row for row in history.evals}
        # A resumed run (or a cell read from a longer run) rewrites what was logged, in the order it was.
        if 0 in evals:
            self._live_step({"step": 0}, evals[0])
        for row in history.steps:
            self._live_step(row, evals.get(row["step"]))
        self._write_curves()
        if history.evals:
            self.live.make_summary()

    def log_step(self, row: dict, evaluation: dict | None) -> None:
        """Every step: lr and train loss appended to DVCLive's tsv files. At an evaluation: the row,
        the curves and DVCLive's summary (metrics.json), which is rewritten whole, so not every step."""
        if evaluation is not None:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(evaluation) + "\n")
            self._write_curves()
        self._live_step(row, evaluation)
        if evaluation is not None:
            self.live.make_summary()

    def _write_curves(self) -> None:
        """Per validation split, `curves/<name>.csv` (step, tokens, loss, ppl) for `dvc plots`,
        which reads CSV but not JSON lines."""
        names = sorted({k.split("/")[1] for row in self.history.evals for k in row if k.startswith("val/")})
        self.curves.mkdir(exist_ok=True)
        for name in names:
            lines = ["step,tokens,loss,ppl"] + [
                f"{row['step']},{row['tokens']},{row[f'val/{name}/loss']!r},{row[f'val/{name}/ppl']!r}" for row in self.history.evals
            ]
            write_text(self.curves / f"{name}.csv", "\n".join(lines) + "\n")

    def _live_step(self, row: dict, evaluation: dict | None) -> None:
        self.live.step = row["step"]
        for key in ("lr", "train_loss"):
            if row.get(key) is not None:
                self.live.log_metric(f"train/{key}", row[key], plot=True)
        for key, value in (evaluation or {}).items():
            if key.startswith("val/") and value is not None and math.isfinite(value):
                self.live.log_metric(key, value, plot=True)

    def close(self) -> None:
        self.live.end()


# -- the loop -------------------------------------------------------------------------------------


def evaluate_all(model, data: Data, plan: Plan, run: cfg.Optimization, device, autocast) -> dict[str, float]:
    row = {}
    for name, reader in data.val.items():
        loss = mean_loss(unwrap(model), reader, plan.eval_sequences, run.micro_batch_sequences, device, autocast)
        row[f"val/{name}/loss"] = loss
        row[f"val/{name}/ppl"] = perplexity(loss)
    return row


def step_batch(data: Data, plan: Plan, run: cfg.Optimization, streams: tuple, step: int, rank: int, world: int) -> torch.Tensor:
    """This process's share of the global batch of `step` (downstream sequences then replayed upstream
    ones), read alone: a process reads only the sequences it trains on."""
    train_stream, replay_stream = streams
    replayed = plan.replay_in(step)
    fresh = run.batch_sequences - replayed
    share = run.batch_sequences // world
    start, stop = rank * share, (rank + 1) * share
    def read(stream, size: int, before: int, lo: int, hi: int) -> np.ndarray:
        # The same split every step: each stream in whole batches of its own size; a share that is not a
        # whole number of sequences: each stream from where it stopped (`before` sequences read so far).
        return stream.batch(step, size, lo, hi) if plan.uniform else stream.take(before + lo, hi - lo)

    parts = []
    replayed_before = cfg.replay_before(plan.replay_fraction, run.batch_sequences, step)
    if start < fresh:
        parts.append(read(train_stream, fresh, step * run.batch_sequences - replayed_before, start, min(stop, fresh)))
    if stop > fresh:
        parts.append(read(replay_stream, replayed, replayed_before, max(start, fresh) - fresh, stop - fresh))
    return torch.from_numpy(np.concatenate(parts))


def train_loop(
    model,
    run: cfg.Optimization,
    data: Data,
    out_dir: Path,
    state_dir: Path,
    fingerprint: str,
    on_step: Callable[[int, object, History], None] | None = None,
    label: str = "train",
    stops: tuple[int, ...] = (),
    initial_optimizer: dict | None = None,
    on_end: Callable[[dict], None] | None = None,
    snapshot_steps: frozenset = frozenset(),
) -> dict:
    """Train `model` for the run's steps; returns the final evaluation row. `on_step(step, model,
    history)` is called on the main process after each step (and at step 0) for snapshots; `stops`
    are further steps to evaluate (where shorter cells of the same run stop). `initial_optimizer`: an
    optimizer state_dict to start from (a continued cell's) instead of a fresh state; `on_end(state)`
    receives the final optimizer state_dict on the main process. Under FSDP (`run.parallel`), the
    model is sharded in place and `on_step` is called only at `snapshot_steps`, with the model gathered
    whole on rank 0's CPU. The state directory is locked for the run: a second run of the same cell
    refuses to start."""
    main = process_rank() == 0
    with exclusive(state_dir, f"training of {label}") if main else nullcontext():
        return _train_loop(model, run, data, out_dir, state_dir, fingerprint, on_step, label, stops, initial_optimizer, on_end,
                           snapshot_steps)


def _check_fits(optimizer: torch.optim.Optimizer, saved: dict, label: str) -> None:
    """Refuse a carried optimizer state whose moments do not have the parameters' (whole) shapes."""
    shapes = {index: param.shape for index, param in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    for index, moments in saved["state"].items():
        for key, value in moments.items():
            if torch.is_tensor(value) and value.ndim and (index not in shapes or value.shape != shapes[index]):
                raise ValueError(f"{label}: the carried optimizer state does not fit this model (parameter {index}: "
                                 f"{key} of shape {tuple(value.shape)}, the parameter's is {tuple(shapes.get(index, ()))})")


def start_optimizer(optimizer: torch.optim.Optimizer, saved: dict, label: str) -> None:
    """Take the moments of a saved optimizer state (a continued cell's), keeping this run's own
    hyperparameters (param_groups: betas, weight decay, eps)."""
    _check_fits(optimizer, saved, label)
    optimizer.load_state_dict({"state": saved["state"], "param_groups": optimizer.state_dict()["param_groups"]})


def _parameter_names(model, optimizer: torch.optim.Optimizer) -> list[str]:
    """Each optimized parameter's name, in the optimizer's order: its index in a plain state_dict."""
    names = {id(p): name for name, p in unwrap(model).named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def start_sharded_optimizer(model, optimizer: torch.optim.Optimizer, saved: dict, label: str) -> None:
    """`start_optimizer` under FSDP: the carried state (whole tensors, parameters by index, as one
    process saves it) is sharded into this run's optimizer, which keeps its own hyperparameters.
    A collective: every process calls it with the same state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    _check_fits(optimizer, saved, label)  # a sharded parameter's shape is the whole one
    names = _parameter_names(model, optimizer)
    groups, start = [], 0
    for group in optimizer.param_groups:
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": names[start:start + len(group["params"])]})
        start += len(group["params"])
    set_optimizer_state_dict(unwrap(model), optimizer, {"state": {names[i]: m for i, m in saved["state"].items()}, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model, optimizer: torch.optim.Optimizer) -> dict | None:
    """The FSDP optimizer's state as one process's optimizer gives it (`state_dict()`: whole tensors,
    parameters by index), gathered on rank 0's CPU, so a continued cell starts from it under DDP or
    FSDP alike. A collective: every process calls it; the others get None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(unwrap(model), optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
    return {"state": {index[name]: moments for name, moments in full["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]]}


def _train_loop(model, run, data, out_dir, state_dir, fingerprint, on_step, label, stops, initial_optimizer=None, on_end=None,
                snapshot_steps=None) -> dict:
    sharded = run.parallel == "fsdp"
    device, rank, world = setup_device(run.device, group=sharded)
    seq_len = data.train.seq_len
    plan = Plan.of(run, seq_len, data.replay_fraction, world, stops)
    if plan.replays and data.replay is None:
        raise cfg.ConfigError("replay_fraction > 0 needs the upstream train split (--replay)")
    precision = resolve_precision(run.precision, device)
    model = model.to(device)
    if sharded:
        shard_model(model, precision)
    optimizer = build_optimizer(model, run, device)
    scaler = grad_scaler(precision, device, run.loss_scale_window)
    if sharded:
        state = load_sharded_state(state_dir, fingerprint, model, optimizer)
    else:
        state = load_state(state_dir, fingerprint)
        if state is not None:
            unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    history, start = History(), 0
    if state is not None:
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        history, start = state["history"], state["step"]
        log.info("%s: resuming from step %d of %d (%s)", label, start, plan.total_steps, state_dir)
    elif initial_optimizer is not None:
        if sharded:
            start_sharded_optimizer(model, optimizer, initial_optimizer, label)
        else:
            start_optimizer(optimizer, initial_optimizer, label)
        log.info("%s: optimizer state carried over from the continued cell", label)
    autocast = autocast_for(precision, device)
    if run.compile:
        model = torch.compile(model)
    if world > 1 and not sharded:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    main = rank == 0

    def snapshot(done: int) -> None:
        # on_step on rank 0; under FSDP only at the snapshot steps, where every process gathers the model.
        if on_step is None or (sharded and done not in snapshot_steps):
            return
        current = gather_model(model) if sharded else model
        if main:
            on_step(done, current, history)

    metrics = MetricsLog(out_dir, history) if main else None
    streams = (ShuffledStream(data.train, run.seed), ShuffledStream(data.replay, run.seed + 1) if data.replay else None)

    if start == 0:
        row = {"step": 0, "tokens": 0, "lr": plan.schedule(0), "train_loss": None,
               **evaluate_all(model, data, plan, run, device, autocast), "tokens_per_s": None}
        history.evals.append(row)
        if main:
            metrics.log_step({"step": 0}, row)
        snapshot(0)
    model.train()
    bar = tqdm(total=plan.total_steps, initial=start, desc=label, unit="step", disable=not main, mininterval=1.0, dynamic_ncols=True)
    tokens_per_step = run.batch_sequences * seq_len
    clock, clock_step = time.perf_counter(), start
    preemption = Preemption()
    # The schedule advances once per applied update, as DeepSpeed's does under GPT-NeoX: an fp16 step skipped
    # for overflow leaves the learning rate where it was (the papers' runs, fp16 with dynamic loss scaling).
    skipped_steps = sum(1 for row in history.steps if row.get("skipped"))
    for step in range(start, plan.total_steps):
        lr = plan.schedule(step - skipped_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = step_batch(data, plan, run, streams, step, rank, world).to(device)
        step_loss = torch.zeros((), device=device)
        for micro in range(plan.accumulation):
            chunk = batch[micro * run.micro_batch_sequences : (micro + 1) * run.micro_batch_sequences]
            # DDP all-reduces (FSDP reduce-scatters) gradients on the last micro-batch only.
            last = micro == plan.accumulation - 1
            if sharded:
                unwrap(model).set_requires_gradient_sync(last)
            with nullcontext() if world == 1 or sharded or last else model.no_sync():
                with autocast or nullcontext():
                    loss = model(input_ids=chunk, labels=chunk).loss / plan.accumulation
                scaler.scale(loss).backward()
            step_loss += loss.detach()
        stop = preemption.requested
        if world > 1:
            # One all-reduce carries the loss and the stop request: a SIGTERM reaching any process
            # (each gets its own under torchrun) stops every one at this same step.
            shared = torch.stack([step_loss, torch.tensor(float(stop), device=device)])
            dist.all_reduce(shared)
            step_loss, stop = shared[0] / world, bool(shared[1] > 0)
        train_loss = float(step_loss)
        if not math.isfinite(train_loss):
            # Before the update: the model and the last saved state stay as they were.
            raise TrainingDiverged(f"{label}: loss is {train_loss} at step {step} (lr {lr:.3g}); last saved state kept in {state_dir}")
        skipped = not update(model, optimizer, scaler, run.grad_clip)
        if skipped and not scaler.is_enabled():
            raise TrainingDiverged(f"{label}: gradient norm is not finite at step {step} although the loss is {train_loss:.4g} "
                                   f"(lr {lr:.3g}); the step was not applied; last saved state kept in {state_dir}")
        if skipped:
            skipped_steps += 1
            log.warning("%s: step %d: gradients overflowed in fp16; step skipped, loss scale lowered to %g (dynamic loss scaling)",
                        label, step, scaler.get_scale())
        done = step + 1
        step_row = {"step": done, "lr": lr, "train_loss": train_loss, **({"skipped": True} if skipped else {})}
        history.steps.append(step_row)
        evaluation = None
        if plan.evaluates(done, run):
            elapsed = time.perf_counter() - clock
            evaluation = {"step": done, "tokens": done * tokens_per_step, "lr": lr, "train_loss": train_loss,
                          **evaluate_all(model, data, plan, run, device, autocast),
                          "tokens_per_s": (done - clock_step) * tokens_per_step / max(elapsed, 1e-9)}
            history.evals.append(evaluation)
            clock, clock_step = time.perf_counter(), done
        if main:
            metrics.log_step(step_row, evaluation)
        snapshot(done)
        if (done % run.save_every == 0 or stop) and done < plan.total_steps:
            if sharded:
                save_sharded_state(state_dir, model, optimizer, done, history, fingerprint, scaler)
            elif main:
                save_state(state_dir, model, optimizer, done, history, fingerprint, scaler)
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        if stop and done < plan.total_steps:
            if world > 1:
                dist.barrier()  # every process waits for rank 0's save: torchrun stops the others when one exits
            if main:
                log.warning("%s: SIGTERM: state saved at step %d in %s; rerun to resume", label, done, state_dir)
            raise SystemExit(128 + signal.SIGTERM)
    bar.close()
    final_optimizer = full_optimizer_state(model, optimizer) if sharded and on_end else None  # every process
    if main:
        metrics.close()
        if on_end:
            on_end(final_optimizer if sharded else optimizer.state_dict())
        if device.type == "cuda":
            # What `rewarm plan` estimates as the peak per GPU: the figure to compare it with.
            log.info("%s: peak GPU memory %.2f GB (torch.cuda.max_memory_allocated on rank 0)", label,
                     torch.cuda.max_memory_allocated(device) / 1e9)
    if world > 1:
        dist.barrier()
    return final_metrics(history)


def update(model, optimizer, scaler, grad_clip: float) -> bool:
    """Unscale, clip and apply the accumulated gradients; False when their norm is not finite (a NaN
    or an overflow), in which case nothing is applied. The norm is the one after DDP's all-reduce,
    so every process takes the same decision."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    finite = math.isfinite(float(norm))
    if finite or scaler.is_enabled():
        scaler.step(optimizer)  # with fp16, the scaler skips the step itself when it found infs
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return finite


def final_metrics(history: History) -> dict:
    """The last evaluation, without the wall-clock figure: a pure function of the inputs."""
    return {k: v for k, v in history.evals[-1].items() if k != "tokens_per_s"}


# -- the `train` stage ------------------------------------------------------------------------------


def train_cell(
    config: cfg.Config,
    run: cfg.TrainConfig,
    base_dir: Path,
    train_dir: Path,
    val_dirs: dict[str, Path],
    out_dir: Path,
    state_dir: Path,
    replay_dir: Path | None = None,
) -> dict:
    """Re-warm the base model on `train_dir` with the cell's settings `run`; write the run directory."""
    from rewarm import checkpoints
    from rewarm.data import tokenizer as tok

    checkpoints.check_model_dir(base_dir)
    tokenizer = tok.load(base_dir)
    fingerprint = tok.fingerprint(tokenizer)
    # Shards are verified once: by rank 0 alone (the others start when it has, at DDP's first broadcast),
    # and not again on a resume unless a file changed (the stamp lives with the run's state).
    state_dir.mkdir(parents=True, exist_ok=True)
    verify = VerifiedStamp(state_dir / VERIFIED) if process_rank() == 0 else False
    data = Data(
        train=ShardReader(train_dir, verify, tokenizer_fingerprint=fingerprint),
        val={name: ShardReader(path, verify, tokenizer_fingerprint=fingerprint) for name, path in val_dirs.items()},
        replay=ShardReader(replay_dir, verify, tokenizer_fingerprint=fingerprint) if replay_dir and run.replay_fraction > 0 else None,
        replay_fraction=run.replay_fraction,
    )
    if verify:
        log.info("shards verified: %d hashed, %d unchanged since verified (%s)", verify.hashed,
                 len(verify.entries) - verify.hashed, verify.path)
    model_config = checkpoints.read_gpt_neox_config(base_dir)
    if model_config["vocab_size"] < tok.vocab_size(tokenizer):
        raise checkpoints.CheckpointError(
            f"{base_dir}: embedding has {model_config['vocab_size']} rows, fewer than the tokenizer's {tok.vocab_size(tokenizer)} ids"
        )
    if model_config["max_position_embeddings"] < data.train.seq_len:
        raise checkpoints.CheckpointError(
            f"{base_dir}: context of {model_config['max_position_embeddings']} tokens (max_position_embeddings) is shorter "
            f"than the shards' sequences ({data.train.seq_len} tokens, prepare.seq_len)"
        )
    # The final model, the resumable state (weights and two Adam moments), and a model per shorter cell.
    name = grid.cell_name(run)
    stops = grid.prefix_stops(config, name)
    check_free_space(out_dir, (4 + len(stops)) * checkpoints.weights_bytes(base_dir), f"train {name}")
    weights = checkpoints.weights_fingerprint(base_dir)  # verifies the weights, hashing them once
    model = checkpoints.load_model(base_dir, verify=False)
    carried = checkpoints.load_optimizer_state(base_dir)  # a continued cell's, when its checkpoint carries it
    kept: dict = {}
    main = process_rank() == 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", {
            "cell": name, "train": cfg.to_dict(run), "seq_len": data.train.seq_len,
            "code": code_version(), "data_order": DATA_ORDER,
            "inputs": {"base_dir": str(base_dir), "base_weights": weights, "tokenizer": fingerprint,
                       **{key: reader.manifest["source"]["fingerprint"] for key, reader in
                          [("train", data.train), *[(f"val/{k}", v) for k, v in data.val.items()]]}},
        })
    snapshots = state_dir / "stops"

    total = cfg.total_steps(run, data.train.seq_len)
    final_model: list = []

    def record_stop(step: int, current, history: History) -> None:
        if step == total:  # the final model (under FSDP, gathered: the run's own `model` is sharded)
            final_model.append(current)
        # What a shorter cell of this run needs at its stopping point: the model and the curve so far.
        if step in stops.values():
            with atomic_dir(snapshots / f"step{step}") as tmp:
                checkpoints.save_model_dir(current, base_dir, tmp / "model")
                write_json(tmp / STOP_HISTORY, dataclasses.asdict(history))

    failure = out_dir / FAILURE
    try:
        extra = {"stops": sorted(stops.values()), "optimizer_state": carried is not None}
        final = train_loop(model, run, data, out_dir, state_dir, run_fingerprint(run, weights, data, extra),
                           on_step=record_stop, label=name, stops=tuple(stops.values()), initial_optimizer=carried,
                           on_end=kept.update if grid.keeps_optimizer(config, name) else None,
                           snapshot_steps=frozenset(stops.values()) | {total})
    except TrainingDiverged as error:
        if main:  # kept beside the run's outputs (which the workflow removes), for the report to list
            write_json(failure, {"cell": name, "error": str(error)})
        raise
    if main:
        failure.unlink(missing_ok=True)
        with atomic_dir(out_dir / STOPS) as tmp:
            for cell, step in stops.items():
                shutil.copytree(snapshots / f"step{step}", tmp / f"step{step}")
            write_json(tmp / "stops.json", {"run": name, "stops": stops})
        with atomic_dir(out_dir / "model") as tmp:
            checkpoints.save_model_dir(final_model[-1], base_dir, tmp)
            if kept:  # a later cell continues this one with its optimizer state
                checkpoints.save_optimizer_state(kept, tmp)
        write_json(out_dir / "metrics.json", final)
        _remove_state(state_dir)
    return final


def prefix_cell(config: cfg.Config, cell: str, run_dir: Path, out_dir: Path) -> dict:
    """The `prefix` stage: the run directory of a cell that stops earlier than a longer run with the
    same settings, from what that run recorded at the cell's stopping point (its model, and its
    curve up to there). Training is deterministic, so this is what training the cell alone gives."""
    named = grid.cells(config)
    if cell not in named:
        raise cfg.ConfigError(f"cell {cell!r} is not in the grid (cells: {', '.join(named)})")
    index_path = run_dir / STOPS / "stops.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: missing; {run_dir} is not a finished training run")
    index = json.loads(index_path.read_text())
    if cell not in index["stops"]:
        raise cfg.ConfigError(f"{run_dir} does not record cell {cell} (it records: {', '.join(index['stops']) or 'none'}); "
                              f"rewarm grid shows which run each cell is read from")
    step = index["stops"][cell]
    expected = cfg.total_steps(named[cell], config.prepare.seq_len)
    if step != expected:
        raise cfg.ConfigError(f"{run_dir}: cell {cell} was recorded at step {step}, but it stops at step {expected}")
    recorded = run_dir / STOPS / f"step{step}"
    history = History(**json.loads((recorded / STOP_HISTORY).read_text()))
    run_config = json.loads((run_dir / "config.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", {**run_config, "cell": cell, "train": cfg.to_dict(named[cell]),
                                         "read_from": {"run": index["run"], "step": step}})
    MetricsLog(out_dir, history).close()
    with atomic_dir(out_dir / "model") as tmp:
        for item in (recorded / "model").iterdir():
            shutil.copy2(item, tmp / item.name)
    final = final_metrics(history)
    write_json(out_dir / "metrics.json", final)
    return final


def code_version() -> dict:
    """What code ran: the package version, and the git commit when run from a checkout."""
    import subprocess

    import rewarm

    version = {"rewarm": rewarm.__version__, "torch": torch.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(rewarm.__file__).parent)
        if commit.returncode == 0:
            version["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _remove_state(state_dir: Path) -> None:
    """The run is complete: its resumable state (optimizer moments: 2x the model) and its records at
    the stops (now in the run directory) are no longer needed."""
    (state_dir / STATE_INDEX).unlink(missing_ok=True)
    for path in _state_files(state_dir):
        _remove(path)
    shutil.rmtree(state_dir / STOPS, ignore_errors=True)
