"""The training loop, shared by re-warm runs (`train`) and the demo's pre-training (`pretrain`).

One process, or several under `torchrun` (DistributedDataParallel). Each step takes the
next global batch of `batch_sequences` sequences (a share from the upstream split when
replaying), splits it across processes and micro-batches, accumulates gradients, clips
and updates with the step's learning rate. The data order is a pure function of the
step, so the resumable state (model, optimizer, step, RNG, metric history; saved
atomically every `save_every` steps: rewarm.state) is all a killed run needs to end exactly
where the uninterrupted run would (bit-exact on CPU). What a run logs is rewarm.metrics'; where it
computes (device, precision, process group, FSDP), rewarm.runtime's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import rewarm
from rewarm import checkpoints, grid
from rewarm import config as cfg
from rewarm.checkpoints import unwrap
from rewarm.data import tokenizer as tok
from rewarm.data.shards import DATA_ORDER, ShardReader, ShuffledStream, VerifiedStamp, shard_files
from rewarm.evaluate import mean_loss, perplexity
from rewarm.io import FAILURE, atomic_dir, check_free_space, check_replaceable, claim_dir, exclusive, write_json
from rewarm.metrics import History, MetricsLog, final_metrics
from rewarm.prefetch import prefetch
from rewarm.runtime import (
    autocast_for,
    from_rank0,
    gather_model,
    grad_scaler,
    process_rank,
    resolve_precision,
    setup_device,
    decoder_layers,
    shard_with_weights,
    share,
)
from rewarm.state import load_sharded_state, load_state, remove_states, save_sharded_state, save_state

log = logging.getLogger(__name__)

RUN_STAGES = ("train", "prefix")
"""The stages that write a run directory: a cell's is either's, as the grid trains it or reads it from a longer run."""
STOPS = "stops"
"""A run's records at the stops of its shorter cells: step<N>/model/, step<N>/history.json, stops.json."""
STOP_HISTORY = "history.json"
VERIFIED = "verified-shards.json"
"""In a run's state directory: the shards the run's processes have verified (`VerifiedStamp`), written by rank 0."""


MIN_LOSS_SCALE = 1.0
"""fp16: an overflow at this loss scale ends the run as diverged, as DeepSpeed's dynamic scaler does at its
min_loss_scale (1 in the GPT-NeoX configurations of the papers' runs); above it, an overflow (of the loss or
of the gradients) only skips the step and halves the scale."""


class TrainingDiverged(ArithmeticError):
    """The loss became NaN or infinite."""


@dataclass
class Data:
    """What a run reads: its training split, an optional replay split, validation samples."""

    train: ShardReader
    val: dict[str, ShardReader]
    replay: ShardReader | None = None
    replay_fraction: float = 0.0


# -- optimizer ------------------------------------------------------------------------------------


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


# -- a run's identity and pre-emption --------------------------------------------------------------


def run_fingerprint(run: cfg.Optimization, base_weights: str, data: Data, extra: dict | None = None) -> str:
    """Identifies a run: its settings, its starting weights and its data (shard checksums)."""
    manifests = {"train": data.train.manifest, "replay": data.replay.manifest if data.replay else None,
                 **{f"val/{k}": v.manifest for k, v in sorted(data.val.items())}}
    shards = {k: [s["sha256"] for s in m["shards"]] if m else None for k, m in manifests.items()}
    payload = {"run": cfg.to_dict(run), "base": base_weights, "shards": shards, "extra": extra or {}, "data_order": DATA_ORDER}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Preemption:
    """Notes a SIGTERM (a scheduler pre-empting the job) so that the loop saves its state at the
    end of the current step and exits, instead of dying mid-step. One per process (`PREEMPTION`),
    installed afresh by each training loop and noting until the process ends: a SIGTERM after the
    last step still keeps the finished run's state for the retry (`exit_if_preempted`)."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._note)
        except ValueError:  # not the main thread: signals stay as they are
            pass

    def _note(self, signum, frame) -> None:
        self.requested = True


PREEMPTION = Preemption()


def exit_if_preempted(label: str, state_dir: Path, step: int, requested: bool | None = None) -> None:
    """Before a finished run's state is removed: if the job was pre-empted meanwhile (`requested`: the
    processes' agreed answer, else this process's SIGTERM), keep the state and exit as a stopped job.
    The scheduler counts the job as cancelled whatever it exits with, and the workflow retries it with
    its outputs removed; the retry resumes from this state at its last step and only rewrites the
    outputs, instead of training the whole run again."""
    if PREEMPTION.requested if requested is None else requested:
        if process_rank() == 0:
            log.warning("%s: SIGTERM: state saved at step %d in %s; the run is complete, rerun to write its outputs",
                        label, step, state_dir)
        raise SystemExit(128 + signal.SIGTERM)


# -- the loop -------------------------------------------------------------------------------------


def evaluate_all(model, data: Data, plan: cfg.Plan, run: cfg.Optimization, device, autocast, rank: int = 0,
                 world: int = 1) -> dict[str, float]:
    """The in-training evaluation on every validation sample, its sequences shared by the processes."""
    row = {}
    for name, reader in data.val.items():
        loss = mean_loss(unwrap(model), reader, plan.eval_sequences, run.micro_batch_sequences, device, autocast, rank, world)
        row[f"val/{name}/loss"] = loss
        row[f"val/{name}/ppl"] = perplexity(loss)
    return row


def step_batch(data: Data, plan: cfg.Plan, run: cfg.Optimization, streams: tuple, step: int, rank: int, world: int,
               pin: bool = False) -> torch.Tensor:
    """This process's share of the global batch of `step` (downstream sequences then replayed upstream
    ones), read alone: a process reads only the sequences it trains on. Token ids as int32 (half of
    int64's bytes to copy; the device widens them), in page-locked memory with `pin` (a GPU copies
    them without blocking)."""
    train_stream, replay_stream = streams
    replayed = plan.replay_in(step)
    fresh = run.batch_sequences - replayed
    share = run.batch_sequences // world
    start, stop = rank * share, (rank + 1) * share
    batch = torch.empty((share, data.train.seq_len), dtype=torch.int32, pin_memory=pin)
    rows = batch.numpy()

    def read(stream, size: int, before: int, lo: int, hi: int, out: np.ndarray) -> None:
        # The same split every step: each stream in whole batches of its own size; a share that is not a
        # whole number of sequences: each stream from where it stopped (`before` sequences read so far).
        if plan.uniform:
            stream.batch(step, size, lo, hi, out=out)
        else:
            stream.take(before + lo, hi - lo, out=out)

    replayed_before = cfg.replay_before(plan.replay_fraction, run.batch_sequences, step)
    split = min(stop, fresh) - start  # this share's fresh sequences, then its replayed ones
    if start < fresh:
        read(train_stream, fresh, step * run.batch_sequences - replayed_before, start, min(stop, fresh), rows[:split])
    if stop > fresh:
        read(replay_stream, replayed, replayed_before, max(start, fresh) - fresh, stop - fresh, rows[max(split, 0):])
    return batch


def step_batches(data: Data, plan: cfg.Plan, run: cfg.Optimization, streams: tuple, start: int, rank: int, world: int,
                 pin: bool = False) -> Iterator[torch.Tensor]:
    """The batches of steps start, start + 1, ..., read ahead in a thread (two steps ahead) while the
    current step runs: the reading of rows in Python overlaps the GPU's work."""
    return prefetch((step_batch(data, plan, run, streams, step, rank, world, pin) for step in range(start, plan.total_steps)),
                    depth=2, name="train-prefetch")


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
    locked: bool = False,
    live: bool = True,
    trackers: cfg.LoggingConfig = cfg.LoggingConfig(),
    until: int | None = None,
) -> dict:
    """Train `model` for the run's steps; returns the final evaluation row. `on_step(step, model,
    history)` is called on the main process after each step (and at step 0) for snapshots; `stops`
    are further steps to evaluate (where shorter cells of the same run stop). `initial_optimizer`: an
    optimizer state_dict to start from (a continued cell's) instead of a fresh state; `on_end(state)`
    receives the final optimizer state_dict on the main process. Under FSDP (`run.parallel`), the
    model is sharded in place and `on_step` is called only at `snapshot_steps`, with the model gathered
    whole on rank 0's CPU. The state directory is locked for the run: a second run of the same cell
    refuses to start (`locked`: the caller holds that lock already). `live=False`: no DVCLive files
    (`MetricsLog`); `trackers`: TensorBoard's event files and an offline W&B run too (config `logging`).
    `until`: end at this step (the schedule stays the whole run's) with the state saved there, for the
    run to go on from it later (early stopping's rung)."""
    main = process_rank() == 0
    with exclusive(state_dir, f"training of {label}") if main and not locked else nullcontext():
        return _train_loop(model, run, data, out_dir, state_dir, fingerprint, on_step, label, stops, initial_optimizer, on_end,
                           snapshot_steps, live, trackers, until)


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
                snapshot_steps=None, live=True, trackers=cfg.LoggingConfig(), until=None) -> dict:
    sharded = run.parallel == "fsdp"
    device, rank, world = setup_device(run.device, group=sharded)
    seq_len = data.train.seq_len
    plan = cfg.Plan.of(run, seq_len, data.replay_fraction, world, stops)
    end = plan.total_steps if until is None else min(until, plan.total_steps)  # where this run stops
    if plan.replays and data.replay is None:
        raise cfg.ConfigError("replay_fraction > 0 needs the upstream train split (--replay)")
    precision = resolve_precision(run.precision, device)
    if sharded:  # rank 0's weights, sent to the others' shards (their `model` is a skeleton on the meta device)
        model = shard_with_weights(model, precision, device)
    else:
        model = model.to(device)
    optimizer = build_optimizer(model, run, device)
    scaler = grad_scaler(precision, device, run.loss_scale_window)
    if sharded:
        state = load_sharded_state(state_dir, fingerprint, model, optimizer)
    else:
        state = load_state(state_dir, fingerprint)
        if state is not None:
            unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    history, start, deferred = History(), 0, False
    if state is not None:
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        history, start, deferred = state["history"], state["step"], state.get("deferred", False)
        if start > end:
            raise cfg.ConfigError(f"{label}: the state saved in {state_dir} is at step {start}, past this run's end at step {end} "
                                  f"(early stopping's rung): it was saved by the longer run; remove {state_dir} to train the rung again")
        log.info("%s: resuming from step %d of %d (%s)", label, start, plan.total_steps, state_dir)
    elif initial_optimizer is not None:
        if sharded:
            start_sharded_optimizer(model, optimizer, initial_optimizer, label)
        else:
            start_optimizer(optimizer, initial_optimizer, label)
        log.info("%s: optimizer state carried over from the continued cell", label)
    autocast = autocast_for(precision, device)
    if run.activation_checkpointing:
        # Per decoder layer, as transformers does it: only each block's input is kept, its activations are
        # recomputed in the backward (non-reentrant: it composes with DDP, FSDP and torch.compile).
        unwrap(model).activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if rank == 0:
            log.info("%s: activation checkpointing on %d transformer blocks", label,
                     sum(1 for block in decoder_layers(model) if getattr(block, "gradient_checkpointing", False)))
    model = wrap_model(model, run.compile, world > 1 and not sharded, device)
    main = rank == 0

    def snapshot(done: int) -> None:
        # on_step on rank 0; under FSDP only at the snapshot steps, where every process gathers the model.
        if on_step is None or (sharded and done not in snapshot_steps):
            return
        current = gather_model(model) if sharded else model
        if main:
            on_step(done, current, history)

    if deferred and plan.evaluates(start, run):
        # The run was stopped at this step and saved at once: its evaluation is this run's first work, before
        # the logs are rewritten from the history, so they come out as the uninterrupted run's.
        last = history.steps[-1]
        history.evals.append({"step": start, "tokens": start * run.batch_sequences * seq_len, "lr": last["lr"],
                              "train_loss": last["train_loss"], **evaluate_all(model, data, plan, run, device, autocast, rank, world),
                              "tokens_per_s": None})
    metrics = MetricsLog(out_dir, history, live, trackers.tensorboard, trackers.wandb, cfg.to_dict(run)) if main else None
    streams = (ShuffledStream(data.train, run.seed), ShuffledStream(data.replay, run.seed + 1) if data.replay else None)

    if deferred or start == end:  # resumed at a stop, or a finished run resumed to write its outputs
        snapshot(start)
    if start == 0:
        row = {"step": 0, "tokens": 0, "lr": plan.schedule(0), "train_loss": None,
               **evaluate_all(model, data, plan, run, device, autocast, rank, world), "tokens_per_s": None}
        history.evals.append(row)
        if main:
            metrics.log_step({"step": 0}, row)
        snapshot(0)
    model.train()
    bar = tqdm(total=plan.total_steps, initial=start, desc=label, unit="step", disable=not main, mininterval=1.0, dynamic_ncols=True)
    tokens_per_step = run.batch_sequences * seq_len
    clock, clock_step = time.perf_counter(), start
    PREEMPTION.install()
    # The schedule advances once per applied update, as DeepSpeed's does under GPT-NeoX: an fp16 step skipped
    # for overflow leaves the learning rate where it was (the papers' runs, fp16 with dynamic loss scaling).
    skipped_steps = sum(1 for row in history.steps if row.get("skipped"))
    # The next batches read in a thread while a step runs; the thread is stopped however the loop ends.
    with closing(step_batches(data, plan, run, streams, start, rank, world, pin=device.type == "cuda")) as batches:
        for step in range(start, end):
            lr = plan.schedule(step - skipped_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Copied while the host goes on (page-locked memory on a GPU), widened to int64 on the device.
            batch = next(batches).to(device, non_blocking=True).long()
            step_loss = torch.zeros((), device=device)
            for micro in range(plan.accumulation):
                chunk = batch[micro * run.micro_batch_sequences : (micro + 1) * run.micro_batch_sequences]
                # DDP all-reduces gradients on the last micro-batch only. FSDP reduce-scatters them on every one, into
                # the shards: with the sync off it would hold every parameter's whole fp32 gradient across the
                # micro-batches (4 bytes a parameter more per GPU than `plan` counts; torchtitan does the same).
                last = micro == plan.accumulation - 1
                with nullcontext() if world == 1 or sharded or last else model.no_sync():
                    with autocast or nullcontext():
                        # use_cache=False: no key/value cache (Pythia's config asks for one; nothing here generates)
                        loss = model(input_ids=chunk, labels=chunk, use_cache=False).loss / plan.accumulation
                    scaler.scale(loss).backward()
                step_loss += loss.detach()
            stop = PREEMPTION.requested
            if world > 1:
                # One all-reduce carries the loss and the stop request: a SIGTERM reaching any process
                # (each gets its own under torchrun) stops every one at this same step.
                shared = torch.stack([step_loss, torch.tensor(float(stop), device=device)])
                dist.all_reduce(shared)
                step_loss, stop = shared[0] / world, bool(shared[1] > 0)
            train_loss = float(step_loss)
            if not math.isfinite(train_loss) and not scaler.is_enabled():
                # Before the update: the model and the last saved state stay as they were. (In fp16 a non-finite
                # loss is an overflow like any other: its gradients are too, and the scaler skips the step.)
                raise TrainingDiverged(f"{label}: loss is {train_loss} at step {step} (lr {lr:.3g}); last saved state kept in {state_dir}")
            skipped = not update(model, optimizer, scaler, run.grad_clip)
            if skipped and not scaler.is_enabled():
                raise TrainingDiverged(f"{label}: gradient norm is not finite at step {step} although the loss is {train_loss:.4g} "
                                       f"(lr {lr:.3g}); the step was not applied; last saved state kept in {state_dir}")
            if skipped:
                skipped_steps += 1
                log.warning("%s: step %d: %s overflowed in fp16; step skipped, loss scale lowered to %g (dynamic loss scaling)",
                            label, step, "the loss" if not math.isfinite(train_loss) else "gradients", scaler.get_scale())
                if scaler.get_scale() < MIN_LOSS_SCALE:
                    raise TrainingDiverged(f"{label}: step {step} overflowed in fp16 with the loss scale already at its minimum "
                                           f"({MIN_LOSS_SCALE:g}, as DeepSpeed's min_loss_scale in the papers' runs): the run diverges "
                                           f"(lr {lr:.3g}); last saved state kept in {state_dir}")
            done = step + 1
            step_row = {"step": done, "lr": lr, "train_loss": train_loss, **({"skipped": True} if skipped else {})}
            history.steps.append(step_row)
            if stop and done < end:
                # Pre-empted (SIGTERM; the job is killed some seconds later): save at once and exit. The step's
                # evaluation and snapshot, if it has them, are deferred to the resumed run, which does them first.
                if sharded:
                    save_sharded_state(state_dir, model, optimizer, done, history, fingerprint, scaler, deferred=True)
                elif main:
                    save_state(state_dir, model, optimizer, done, history, fingerprint, scaler, deferred=True)
                if world > 1:
                    dist.barrier()  # every process waits for rank 0's save: torchrun stops the others when one exits
                if main:
                    bar.close()
                    log.warning("%s: SIGTERM: state saved at step %d in %s; rerun to resume", label, done, state_dir)
                raise SystemExit(128 + signal.SIGTERM)
            evaluation = None
            if plan.evaluates(done, run):
                elapsed = time.perf_counter() - clock
                evaluation = {"step": done, "tokens": done * tokens_per_step, "lr": lr, "train_loss": train_loss,
                              **evaluate_all(model, data, plan, run, device, autocast, rank, world),
                              "tokens_per_s": (done - clock_step) * tokens_per_step / max(elapsed, 1e-9)}
                history.evals.append(evaluation)
                clock, clock_step = time.perf_counter(), done
            if main:
                metrics.log_step(step_row, evaluation)
            snapshot(done)
            if done % run.save_every == 0 and done < end:
                if sharded:
                    save_sharded_state(state_dir, model, optimizer, done, history, fingerprint, scaler)
                elif main:
                    save_state(state_dir, model, optimizer, done, history, fingerprint, scaler)
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
    bar.close()
    if start < end:
        # The finished run's state, kept until the stage's outputs are written: a job pre-empted or killed
        # while it evaluates or writes them is retried, and the retry resumes here instead of training again.
        # (At a rung, `until`: the state the run goes on from.)
        if sharded:
            save_sharded_state(state_dir, model, optimizer, end, history, fingerprint, scaler)
        elif main:
            save_state(state_dir, model, optimizer, end, history, fingerprint, scaler)
    final_optimizer = full_optimizer_state(model, optimizer) if sharded and on_end else None  # every process
    if main:
        metrics.close()
        if on_end:
            on_end(final_optimizer if sharded else optimizer.state_dict())
        if device.type == "cuda":
            # What `rewarm plan` estimates as the peak per GPU: the figure to compare it with.
            log.info("%s: peak GPU memory %.2f GB (torch.cuda.max_memory_allocated on rank 0)", label,
                     torch.cuda.max_memory_allocated(device) / 1e9)
    stop = PREEMPTION.requested  # a SIGTERM during the last step or after it: exit now, the state is saved
    if world > 1:
        shared = torch.tensor(float(stop), device=device)
        dist.all_reduce(shared)  # also the barrier that lets rank 0 finish its saves first
        stop = bool(shared > 0)
    exit_if_preempted(label, state_dir, end, requested=stop)
    return final_metrics(history)


def wrap_model(model, compile: bool, ddp: bool, device: torch.device):
    """DistributedDataParallel first, then torch.compile around it, as PyTorch advises: compiled inside
    DDP the graph would hide the backward from DDP's hooks and the gradients' all-reduce could not
    overlap it (compiled around it, Dynamo's DDPOptimizer splits the graph at the buckets). The
    gradients are views of DDP's buckets, not a second copy of them (4 bytes a parameter)."""
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                          gradient_as_bucket_view=True)
    return torch.compile(model) if compile else model


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
    rung: bool = False,
    halving: Path | None = None,
) -> dict:
    """Re-warm the base model on `train_dir` with the cell's settings `run`; write the run directory (replaced
    whole: an earlier run of the cell there is removed first, so a killed rerun leaves no old results beside new).
    The cell's state directory is locked first: a second run of the same cell refuses before touching anything.

    Early stopping (`forecast.halving`): `rung=True` trains the cell's first steps only and writes its curve so
    far to `out_dir` (`rewarm rung`), keeping the state there; `halving`, the `halve` stage's directory, says
    whether the cell goes on to its end (resuming from the rung) or ends at the rung (its run directory is the
    rung's model and curve, marked in config.json)."""
    main = process_rank() == 0
    stage = "rung" if rung else "train"
    decision = halving_decision(config, grid.cell_name(run), halving, rung)  # a cell early stopping decides needs it, first
    if main:
        check_replaceable(out_dir, stage, also=() if rung else RUN_STAGES)  # before any work
    with exclusive(state_dir, f"training of {grid.cell_name(run)}") if main else nullcontext():
        return _train_cell(config, run, base_dir, train_dir, val_dirs, out_dir, state_dir, replay_dir, rung, decision)


def halving_decision(config: cfg.Config, name: str, halving: Path | None, rung: bool = False) -> dict | None:
    """A cell's part in early stopping: None when it has none (off, or a cell it does not decide), else
    {"rung": step, "of": steps, "goes_on": bool} (`goes_on` from the `halve` stage's directory, `halving`)."""
    pool = grid.halving_pool(config)
    if name not in pool:
        if rung:
            raise cfg.ConfigError(f"cell {name} has no rung: early stopping is off (forecast.halving.fraction) or does not "
                                  f"decide it (it decides: {', '.join(pool) or 'none'})")
        return None
    decision = {"rung": pool[name], "of": cfg.total_steps(grid.cells(config)[name], config.prepare.seq_len), "goes_on": True}
    if halving is None and not rung:
        raise cfg.ConfigError(f"cell {name}: under early stopping (forecast.halving.fraction) its training goes on from its rung "
                              f"as the `halve` stage decides: give --halving DIR (Snakemake does; dvc.yaml has no early "
                              f"stopping: run the grid with Snakemake, or set forecast.halving.fraction: null)")
    if halving is not None:
        path = Path(halving) / "halving.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the `halve` stage writes it; give --halving its directory)")
        cells = json.loads(path.read_text())["cells"]
        if name not in cells:
            raise cfg.ConfigError(f"{path} does not decide cell {name} (it decides: {', '.join(cells)}): it was written for "
                                  f"another grid; run the `halve` stage again")
        decision["goes_on"] = bool(cells[name]["goes_on"])
    return decision


def _train_cell(config: cfg.Config, run: cfg.TrainConfig, base_dir: Path, train_dir: Path, val_dirs: dict[str, Path],
                out_dir: Path, state_dir: Path, replay_dir: Path | None, rung: bool, decision: dict | None) -> dict:
    # The process group first, with a long timeout: from here on no process works alone while the others
    # wait outside a collective (under torchrun the ranks start together and meet at once).
    _, rank, world = setup_device(run.device, group=run.parallel == "fsdp")
    checkpoints.check_model_dir(base_dir)
    tokenizer = tok.load(base_dir)
    fingerprint = tok.fingerprint(tokenizer)
    # Shards are verified once, the hashing shared by the ranks, and not again on a resume unless a file
    # changed (the stamp lives with the run's state).
    use_replay = replay_dir is not None and run.replay_fraction > 0
    splits = [train_dir, *val_dirs.values(), *([replay_dir] if use_replay else [])]
    stamp = VerifiedStamp(state_dir / VERIFIED)
    files = [item for split in splits for item in shard_files(Path(split))]
    hashed = stamp.verify_all(files, share)
    if rank == 0:
        state_dir.mkdir(parents=True, exist_ok=True)
        stamp.save()
    log.info("shards verified: %d hashed, %d unchanged since verified (%s)%s", hashed, len(files) - hashed, stamp.path,
             f"; rank {rank} of {world} hashed {stamp.hashed_here}" if world > 1 else "")
    data = Data(
        train=ShardReader(train_dir, False, tokenizer_fingerprint=fingerprint),
        val={name: ShardReader(path, False, tokenizer_fingerprint=fingerprint) for name, path in val_dirs.items()},
        replay=ShardReader(replay_dir, False, tokenizer_fingerprint=fingerprint) if use_replay else None,
        replay_fraction=run.replay_fraction,
    )
    checkpoints.check_fits(base_dir, tokenizer, data.train.seq_len)
    # The final model, the resumable state (weights and two Adam moments), and a model per shorter cell.
    name = grid.cell_name(run)
    stops = grid.prefix_stops(config, name)
    total = cfg.total_steps(run, data.train.seq_len)
    # Early stopping: the run evaluates at its rung (the law is fitted there) and ends there unless it goes on.
    until = None if decision is None or (decision["goes_on"] and not rung) else decision["rung"]
    evaluated = tuple(stops.values()) + ((decision["rung"],) if decision else ())
    check_free_space(out_dir, (4 + len(stops)) * checkpoints.weights_bytes(base_dir), f"train {name}")
    weights = from_rank0(lambda: checkpoints.weights_fingerprint(base_dir))  # verifies the weights: rank 0 hashes them once
    # Under FSDP only rank 0 reads the weights; the others shard a skeleton and receive theirs from it.
    model = (checkpoints.model_skeleton(base_dir) if run.parallel == "fsdp" and rank != 0
             else checkpoints.load_model(base_dir, verify=False))
    carried = checkpoints.load_optimizer_state(base_dir)  # a continued cell's, when its checkpoint carries it
    kept: dict = {}
    main = rank == 0
    if main:
        claim_dir(out_dir, "rung" if rung else "train", also=() if rung else RUN_STAGES)
        write_json(out_dir / "config.json", {
            **({"halving": {"rung": decision["rung"], "of": decision["of"], "goes_on": decision["goes_on"] and not rung}}
               if decision else {}),
            "cell": name, "train": cfg.to_dict(run), "seq_len": data.train.seq_len,
            "code": code_version(), "data_order": DATA_ORDER,
            "inputs": {"base_dir": str(base_dir), "base_weights": weights, "tokenizer": fingerprint,
                       **{key: reader.manifest["source"]["fingerprint"] for key, reader in
                          [("train", data.train), *[(f"val/{k}", v) for k, v in data.val.items()]]}},
        })
    snapshots = state_dir / "stops"
    final_model: list = []
    end = total if until is None else until

    def record_stop(step: int, current, history: History) -> None:
        if step == end and not rung:  # the final model (under FSDP, gathered: the run's own `model` is sharded)
            final_model.append(current)
        # What a shorter cell of this run needs at its stopping point: the model and the curve so far.
        if step in stops.values():
            with atomic_dir(snapshots / f"step{step}", "train") as tmp:
                checkpoints.save_model_dir(current, base_dir, tmp / "model")
                write_json(tmp / STOP_HISTORY, dataclasses.asdict(history))

    failure = out_dir / FAILURE
    try:
        extra = {"stops": sorted(stops.values()), "optimizer_state": carried is not None}
        final = train_loop(model, run, data, out_dir, state_dir, run_fingerprint(run, weights, data, extra),
                           on_step=record_stop, label=name, stops=evaluated, initial_optimizer=carried,
                           on_end=kept.update if grid.keeps_optimizer(config, name) else None,
                           snapshot_steps=frozenset(stops.values()) | {end}, locked=True,
                           trackers=config.logging, until=until)
    except TrainingDiverged as error:
        if main:  # kept beside the run's outputs (which the workflow removes), for the report to list
            write_json(failure, {"cell": name, "error": str(error)})
        raise
    if main and rung:
        # The rung's curve is in out_dir (metrics.jsonl); its state stays in state_dir for the run to go on from.
        failure.unlink(missing_ok=True)
        write_json(out_dir / "metrics.json", final)
        exit_if_preempted(name, state_dir, end)
        return final
    if main:
        failure.unlink(missing_ok=True)
        with atomic_dir(out_dir / STOPS, "train") as tmp:
            for cell, step in stops.items():
                shutil.copytree(snapshots / f"step{step}", tmp / f"step{step}")
            write_json(tmp / "stops.json", {"run": name, "stops": stops})
        with atomic_dir(out_dir / "model", "train") as tmp:
            checkpoints.save_model_dir(final_model[-1], base_dir, tmp)
            if kept:  # a later cell continues this one with its optimizer state
                checkpoints.save_optimizer_state(kept, tmp)
        write_json(out_dir / "metrics.json", final)
        exit_if_preempted(name, state_dir, end)
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
    claim_dir(out_dir, "prefix", also=RUN_STAGES)
    write_json(out_dir / "config.json", {**run_config, "cell": cell, "train": cfg.to_dict(named[cell]),
                                         "read_from": {"run": index["run"], "step": step}})
    MetricsLog(out_dir, history, tensorboard=config.logging.tensorboard, wandb=config.logging.wandb, settings=cfg.to_dict(named[cell])).close()
    with atomic_dir(out_dir / "model", "prefix") as tmp:
        for item in (recorded / "model").iterdir():
            shutil.copy2(item, tmp / item.name)
    final = final_metrics(history)
    write_json(out_dir / "metrics.json", final)
    return final


def code_version() -> dict:
    """What code ran: the package version, and the git commit when run from a checkout."""
    import subprocess


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
    remove_states(state_dir)
    shutil.rmtree(state_dir / STOPS, ignore_errors=True)
