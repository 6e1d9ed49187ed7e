"""A run's resumable training state: model, optimizer, step, RNG, metric history and loss scale, saved
atomically every `save_every` steps (one file, or a sharded directory under FSDP through distributed
checkpoint) with an index naming it and its checksum, and loaded back only by the very run that saved it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from rewarm.checkpoints import unwrap
from rewarm.io import PARTIAL, file_sha256, load_tensors, remove_stale_partials, write_json
from rewarm.metrics import History
from rewarm.runtime import process_rank

log = logging.getLogger(__name__)


STATE_FILE = "state-{step}.pt"
"""A saved state's file, named by its step; the index names the one to load."""


STATE_INDEX = "state.json"


class StateWriteError(OSError):
    """A training state that could not be written (a full disk, a file size limit)."""


def _reason(error: Exception) -> str:
    """What a failed write says, the operating system's words first ("No space left on device")."""
    cause = error.__cause__ or error.__context__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(error).splitlines()[0][:200]


class StateError(ValueError):
    """A saved training state that is truncated, altered or unreadable."""


class _HashingWriter:
    """A file that hashes what is written to it: the state's checksum without reading it back."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _unsharded_state(step: int, history: History, fingerprint: str, scaler, deferred: bool) -> dict:
    """A state's part besides the model and optimizer: step, RNG (rank 0's), metric history, loss scale,
    and whether the step's evaluation and snapshot were deferred to the resumed run (a stop saves at once)."""
    return {"step": step, "deferred": deferred, "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": json.dumps(dataclasses.asdict(history)), "fingerprint": fingerprint,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}}


def save_state(state_dir: Path, model, optimizer, step: int, history: History, fingerprint: str, scaler=None,
               deferred: bool = False) -> None:
    """Atomically, as a pair: the state goes to its own file, `state-<step>.pt` (written under a
    temporary name, hashed as it is written, fsynced, renamed), then the index, renamed into place,
    names that file and its checksum, then older state files are removed. A kill at any point
    leaves the index naming a complete state (the previous one until the index is replaced); what
    a kill leaves behind (partials of a process that is gone, older states) the next save removes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(state_dir, f"*{PARTIAL}*")
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             **_unsharded_state(step, history, fingerprint, scaler, deferred)}
    name = STATE_FILE.format(step=step)
    tmp = state_dir / f"{name}{PARTIAL}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as error:  # torch's writer reports a failed write (a full disk) as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise StateWriteError(f"{state_dir}: writing the training state of step {step} failed ({_reason(error)}); the state "
                              f"saved before it is kept: free space and rerun to resume") from None
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
SHARDED_EXTRA = "extra.pt"
"""In a sharded state: what is not sharded (step, history, RNG, loss scale), written by rank 0."""
"""A sharded state (FSDP): a directory written by every process through torch.distributed.checkpoint."""


def save_sharded_state(state_dir: Path, model, optimizer, step: int, history: History, fingerprint: str, scaler=None,
                       deferred: bool = False) -> None:
    """FSDP's resumable state, atomically as `save_state`'s: every process writes its shards of the
    model and optimizer (torch.distributed.checkpoint) into `state-<step>.partial`, and hashes its own
    files; rank 0 adds the rest (`extra.pt`), renames the directory into place, then the index,
    which names it and every file's checksum, then removes older states. A kill at any point leaves
    the index naming a complete state. A collective: every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
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
    try:
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp))
    except CheckpointException as error:  # every process gets it, with each one's failure
        failures = [f[0] if isinstance(f, tuple) else f for f in getattr(error, "failures", {}).values()]  # (exception, traceback)
        reason = _reason(failures[0]) if failures and isinstance(failures[0], Exception) else str(error).splitlines()[0][:200]
        raise StateWriteError(f"{state_dir}: writing the sharded training state of step {step} failed ({reason}); the state "
                              f"saved before it is kept: free space and rerun to resume") from None
    own = {path.name: file_sha256(path) for path in sorted(tmp.glob(f"__{rank}_*"))}
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, own)
    if rank == 0:
        with open(tmp / SHARDED_EXTRA, "wb") as f:
            torch.save(_unsharded_state(step, history, fingerprint, scaler, deferred), f)
            f.flush()
            os.fsync(f.fileno())
        files = {k: v for part in every for k, v in part.items()}
        files.update({n: file_sha256(tmp / n) for n in (".metadata", SHARDED_EXTRA)})
        if (state_dir / name).exists():  # a kill after an earlier rename, before its index: never indexed, so no one's state
            shutil.rmtree(state_dir / name)
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


def remove_states(state_dir: Path) -> None:
    """Every saved state and the index (the run is complete)."""
    (state_dir / STATE_INDEX).unlink(missing_ok=True)
    for path in _state_files(state_dir):
        _remove(path)
