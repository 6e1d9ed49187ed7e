"""Atomic outputs, locks and disk-space checks.

Outputs are written under a temporary name and renamed when complete: a killed job
leaves only a `*.partial-<pid>-*` sibling, never an output that looks complete; the
next run removes stale partials of the same output whose process is gone (a partial
of a process still running is left alone, so two runs never write into one another).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `out_dir` when the block succeeds."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent, f"{out_dir.name}{PARTIAL}*")
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}{PARTIAL}{os.getpid()}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output should not be
    try:
        yield tmp
        _fsync_tree(tmp)
        if out_dir.exists():
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


@contextlib.contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed) for the block; refuse at once,
    with a clear message, if another process holds it (`flock`: released when a process dies)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise BusyError(f"{directory}: {what} is already running in another process; wait for it to finish or stop it") from None
        yield
    finally:
        os.close(fd)


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
