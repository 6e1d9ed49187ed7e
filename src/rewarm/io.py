"""Atomic outputs, locks and disk-space checks.

Outputs are written under a temporary name and renamed when complete: a killed job
leaves only a `*.partial-<pid>-*` sibling, never an output that looks complete; the
next run removes stale partials of the same output whose process is gone (a partial
of a process still running is left alone, so two runs never write into one another).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial-"
# A diverged training run leaves this file in its run directory; `report --partial` reads it.
FAILURE = "failure.json"
log = logging.getLogger(__name__)


def plain_file_name(name: object) -> bool:
    """Whether `name` names a file in the directory it is read from, and nowhere else: no separator, not `.` or
    `..`, nothing absolute (a manifest naming `../../x.arrow` must not reach outside its directory)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name
            and "\0" not in name)


class UnsafeFileError(ValueError):
    """A pickled file that holds more than tensors and numbers: it is not loaded."""


def load_tensors(path: str | Path):
    """torch.load(weights_only=True) on the CPU. A file holding anything else (objects whose loading would run
    code) is refused as unsafe, without torch's own advice to retry with weights_only=False."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(f"{path}: refused as unsafe: it holds objects other than tensors and numbers, which only "
                              f"code from the file could rebuild; it was not loaded (rewarm writes no such file: "
                              f"restore it from the run that made it, or delete it)") from None


class DiskSpaceError(OSError):
    """Not enough free disk space for an output, found before writing it."""


class BusyError(OSError):
    """Another process is writing the same output."""


MARKER = ".rewarm-output"
"""In every directory a stage writes: which stage made it. A stage replaces only a directory of its own (or
an empty one), so `--out data/tokens` or `--out .` given by mistake is refused instead of deleting what is there."""


class NotOurOutputError(ValueError):
    """An output directory that exists and was not made by the stage asked to replace it."""


def made_by(directory: Path) -> str | None:
    """The stage whose output `directory` is (its marker), or None."""
    try:
        return json.loads((Path(directory) / MARKER).read_text()).get("made_by")
    except (OSError, ValueError, AttributeError):
        return None


def check_replaceable(out_dir: str | Path, stage: str, also: tuple[str, ...] = ()) -> None:
    """Refuse to replace `out_dir` unless it is absent, empty, or an output of `stage` (its marker says so) or
    of a stage in `also` (a run directory is `train`'s or `prefix`'s, as the grid reads a cell from a longer
    run or trains it)."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise NotOurOutputError(f"{out_dir}: exists and is not a directory `rewarm {stage}` made; refusing to replace it "
                                f"(give --out a path of its own)")
    owner = made_by(out_dir)
    if owner != stage and owner not in also and _holds_files(out_dir):
        what = f"`rewarm {owner}`'s output" if owner else "not an output of rewarm's"
        raise NotOurOutputError(f"{out_dir}: exists and is {what}, not `rewarm {stage}`'s; refusing to replace it, which "
                                f"would delete what is in it (give --out a path of its own, or remove it yourself)")


def claim_dir(out_dir: str | Path, stage: str, also: tuple[str, ...] = ()) -> None:
    """Make `out_dir` an empty directory of `stage`'s: refused unless it is absent, empty or `stage`'s own
    output, whose contents are removed (a stage that writes into its directory as it goes replaces the
    whole of it, so a killed rerun leaves no earlier results beside its own)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, stage, also)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    mark(out_dir, stage)


def _holds_files(directory: Path) -> bool:
    """Whether a directory holds any file: Snakemake makes an output's parent directories before the job
    (a run's `curves/`) and leaves its `.snakemake_timestamp` in directory outputs; neither is content."""
    return any(path.name != ".snakemake_timestamp" and not path.is_dir() for path in directory.rglob("*"))


def mark(directory: str | Path, stage: str) -> None:
    """Record in `directory` that `stage` made it."""
    write_text(Path(directory) / MARKER, json.dumps({"made_by": stage}) + "\n")


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, stage: str) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `out_dir` when the block succeeds. `out_dir` may be
    replaced only if it is absent, empty, or `stage`'s own output (checked before and again after the work)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, stage)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent, f"{out_dir.name}{PARTIAL}*")
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}{PARTIAL}{os.getpid()}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output should not be
    try:
        yield tmp
        mark(tmp, stage)
        _fsync_tree(tmp)
        if out_dir.exists():
            check_replaceable(out_dir, stage)
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_partials(directory: Path, pattern: str) -> None:
    """Remove the partial outputs matching `pattern` in `directory` whose process is gone."""
    for stale in Path(directory).glob(pattern):
        if not _owner_alive(stale.name.split(PARTIAL, 1)[1]):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def write_json(path: str | Path, data) -> None:
    """Write JSON atomically (temp file in the same directory, then rename)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{PARTIAL}{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _owner_alive(suffix: str) -> bool:
    """Whether the process that named a partial `<pid>-...` still runs (older names: no)."""
    pid = suffix.split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK = ".rewarm-lock"
"""In a directory `exclusive` locks: the lock file (flock's, or soft's marker where flock is missing)."""


@contextlib.contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed) for the block; refuse at once,
    with a clear message, if another process holds it. filelock's lock on `directory/.rewarm-lock`:
    flock, released when a process dies; where the file system has no flock (Lustre mounted without
    it: ENOSYS), a marker file naming the holder's host and process, which a later run on the same
    host takes over once that process is gone."""
    import filelock

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(directory / LOCK, blocking=False, fallback_to_soft=True)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise BusyError(f"{directory}: {what} is already running in another process; wait for it to finish or stop it") from None
    try:
        yield
    finally:
        lock.release()


def check_free_space(path: str | Path, needed: int, what: str, margin: float = 1.1) -> None:
    """Stop before writing `what` under `path` if its file system has less free space than the
    estimate `needed` (bytes) times `margin`."""
    probe = Path(path).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    wanted = int(needed * margin)
    log.debug("%s: needs about %s, %s free in %s", what, human_bytes(wanted), human_bytes(free), probe)
    if wanted > free:
        raise DiskSpaceError(
            f"{what}: needs about {human_bytes(wanted)} on the disk of {probe}, which has {human_bytes(free)} free; "
            f"free some space or write the output elsewhere"
        )


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


def resolve_glob(pattern: str, base_dir: str | Path = ".") -> list[Path]:
    """Files matching `pattern` (relative to `base_dir` unless absolute), sorted for a stable order."""
    full = pattern if Path(pattern).is_absolute() else str(Path(base_dir) / pattern)
    return sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())


_CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """A file's sha256, read in 1 MiB chunks (the digest `sha256sum` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class InternalFileError(ValueError):
    """A file one stage wrote for another (a manifest, a part's record, an evaluation) that is unreadable
    or lacks what its reader needs."""


def read_checked_json(path: str | Path, schema: dict, what: str):
    """A JSON file that must match `schema` (JSON Schema, checked by `jsonschema`): refused naming the file
    and the first field that is missing or wrong, instead of a KeyError in whatever reads it."""
    import jsonschema

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InternalFileError(f"{path}: {what} is not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise InternalFileError(f"{path}: {what} is not UTF-8 text ({error.reason})") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "the top level"
        raise InternalFileError(f"{path}: {what} is incomplete or altered: at {where.lstrip('.')}, {error.message}")
    return data


def object_schema(required: dict, **optional) -> dict:
    """A JSON Schema object with these required properties (name -> schema) and optional ones."""
    return {"type": "object", "required": list(required), "properties": {**required, **optional}}


INTEGER = {"type": "integer", "minimum": 0}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
