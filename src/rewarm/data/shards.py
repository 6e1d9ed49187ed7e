"""Reading packed shards for training: random access to sequence i across shards.

Each shard is memory-mapped (`pyarrow.memory_map`), so only the pages of the
sequences touched become resident: memory does not grow with corpus size.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from rewarm.data.packing import COLUMN, READABLE_SCHEMAS, STREAM_SCHEMAS
from rewarm.io import INTEGER, SHA256, file_sha256, object_schema, plain_file_name, read_checked_json, write_json

MANIFEST = "manifest.json"
DATA_ORDER = 2
"""How training batches are drawn from the shards (`ShuffledStream.batch`): 2, each step's batch within
one epoch (distinct sequences). Version 1 ran on across epoch boundaries; the two differ only in runs
longer than an epoch of their split. Part of a run's fingerprint: a state saved under 1 is not resumed."""


class ShardError(ValueError):
    """A shard directory that is missing, altered or does not match what the reader expects."""


SHARD_ENTRY = object_schema({"file": {"type": "string"}, "rows": INTEGER, "bytes": INTEGER, "sha256": SHA256})
"""A shard as a manifest (or a part's record) lists it."""
MANIFEST_SCHEMA = object_schema({
    "schema_version": {"type": "integer"},
    "seq_len": {"type": "integer", "minimum": 1},
    "tokenizer": object_schema({"fingerprint": {"type": "string"}}),
    "shards": {"type": "array", "items": SHARD_ENTRY},
}, sequences=INTEGER, tokens_written=INTEGER, source=object_schema({"fingerprint": {"type": "string"}}))
"""What the readers of a split's manifest.json use (checked on every read)."""


def read_manifest(split_dir: str | Path) -> dict:
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path}: no manifest (run `rewarm prepare` for this corpus first)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShardError(f"{path}: manifest is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") not in READABLE_SCHEMAS:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ShardError(f"{path}: schema version {found!r}, this rewarm reads " + " and ".join(map(str, READABLE_SCHEMAS)))
    return read_checked_json(path, MANIFEST_SCHEMA, "manifest")


class ShardReader:
    """Sequence `i` of a prepared split, as a numpy array of `seq_len` token ids.

    verify: check each shard's size and sha256 against the manifest before use (True), not at all
    (False: another process of the same run verified them), or once per file (a stamp file: see
    `VerifiedStamp`).
    tokenizer_fingerprint: if given, the shards must have been made with that tokenizer.
    """

    def __init__(self, split_dir: str | Path, verify: "bool | VerifiedStamp" = True, tokenizer_fingerprint: str | None = None):
        self.split_dir = Path(split_dir)
        self.manifest = read_manifest(self.split_dir)
        self.seq_len = int(self.manifest["seq_len"])
        found = self.manifest["tokenizer"]["fingerprint"]
        if tokenizer_fingerprint is not None and found != tokenizer_fingerprint:
            raise ShardError(
                f"{self.split_dir}: shards were tokenized with tokenizer {found[:12]}, "
                f"expected {tokenizer_fingerprint[:12]} (re-run `rewarm prepare` with this model's tokenizer)"
            )
        self._arrays: list[np.ndarray] = []
        self._starts: list[int] = []
        total = 0
        for path, shard in shard_files(self.split_dir, self.manifest):
            if isinstance(verify, VerifiedStamp):
                verify.verify(path, shard)
            elif verify:
                _verify(path, shard)
            self._starts.append(total)
            self._arrays.append(_map_rows(path, self.seq_len, shard["rows"], stream=self.manifest["schema_version"] in STREAM_SCHEMAS))
            total += shard["rows"]
        if isinstance(verify, VerifiedStamp):
            verify.save()
        self._length = total

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self._length <= index < self._length:
            raise IndexError(f"sequence {index} out of range for {self._length} sequences")
        index %= self._length
        shard = bisect.bisect_right(self._starts, index) - 1
        return self._arrays[shard][index - self._starts[shard]]


def shard_files(split_dir: Path, manifest: dict | None = None) -> list[tuple[Path, dict]]:
    """Each shard of a split: its path and its manifest entry (a manifest names only files beside it)."""
    manifest = manifest if manifest is not None else read_manifest(split_dir)
    files = []
    for shard in manifest["shards"]:
        if not plain_file_name(shard.get("file")):
            raise ShardError(f"{split_dir / MANIFEST}: shard {shard.get('file')!r} is not a file name inside "
                             f"{split_dir} (refused: a manifest names only the shards beside it)")
        files.append((split_dir / shard["file"], shard))
    return files


def _verify(path: Path, shard: dict) -> None:
    if not path.exists():
        raise ShardError(f"{path}: shard listed in the manifest is missing")
    if "bytes" in shard and path.stat().st_size != shard["bytes"]:
        raise ShardError(f"{path}: {path.stat().st_size} bytes, the manifest says {shard['bytes']} (truncated or altered)")
    if file_sha256(path) != shard["sha256"]:
        raise ShardError(f"{path}: checksum does not match the manifest (altered or corrupt shard)")


class VerifiedStamp:
    """Shards already verified, so that a run's restarts and resumes do not hash 100 GB again: a JSON
    file (kept with the run's state, not with the data) recording, per shard, the checksum it was
    verified against and the file's identity when it was (size, inode, modification and status-change
    times in ns). A shard whose identity and manifest checksum are unchanged is not hashed again; any
    write to a file, even one that restores its modification time, changes its status-change time,
    so an altered shard is still hashed and refused."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.entries: dict = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}
        self.hashed = 0
        """Shards hashed for this run (the others were found in the stamp)."""
        self.hashed_here = 0
        """Of those, the shards this process hashed (`verify_all` may share them across processes)."""
        self._changed = False

    @staticmethod
    def identity(path: Path, shard: dict) -> list:
        stat = path.stat()
        return [shard["sha256"], stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]

    def known(self, path: Path, shard: dict) -> bool:
        """Verified before, and unchanged since."""
        return path.exists() and self.entries.get(str(path.resolve())) == self.identity(path, shard)

    def check(self, item: tuple[Path, dict]) -> tuple[str, list]:
        """Hash one shard against its manifest entry (ShardError if it differs); its stamp entry."""
        path, shard = item
        # Taken before hashing: a file changed while it was hashed does not match it, and is hashed again.
        identity = self.identity(path, shard) if path.exists() else None
        _verify(path, shard)
        self.hashed_here += 1
        return str(path.resolve()), identity

    def verify(self, path: Path, shard: dict) -> None:
        if not self.known(path, shard):
            self.record([self.check((path, shard))])

    def verify_all(self, files: list[tuple[Path, dict]], run: Callable = lambda function, items: list(map(function, items))) -> int:
        """Verify the shards not verified before; `run(function, items)` does the hashing (`runtime.share`
        splits it across a process group's ranks). Returns how many were hashed."""
        todo = [item for item in files if not self.known(*item)]
        self.record(run(self.check, todo))
        return len(todo)

    def record(self, checked: list[tuple[str, list]]) -> None:
        for key, identity in checked:
            self.entries[key] = identity
            self.hashed += 1
            self._changed = True

    def save(self) -> None:
        """Write the stamp if this process verified anything new (once per split, not per shard)."""
        if self._changed:
            write_json(self.path, self.entries)
            self._changed = False


def _map_rows(path: Path, seq_len: int, rows: int, stream: bool = True) -> np.ndarray:
    """A zero-copy [rows, seq_len] view of a memory-mapped shard: an IPC stream (schema 3), or an IPC
    file (`stream=False`: schemas 1 and 2)."""
    try:
        source = pa.memory_map(str(path), "r")
        table = (pa.ipc.open_stream(source) if stream else pa.ipc.open_file(source)).read_all()
        chunks = table.column(COLUMN)
        # One record batch per shard (as written by ShardWriter) maps without a copy.
        column = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
    except (pa.ArrowException, OSError, KeyError) as error:  # pyarrow reports a corrupt footer as an OSError
        raise ShardError(f"{path}: not a readable shard ({error})") from None
    if len(column) != rows or column.type.list_size != seq_len:
        raise ShardError(f"{path}: holds {len(column)} x {column.type.list_size} tokens, the manifest says {rows} x {seq_len}")
    values = column.flatten().to_numpy(zero_copy_only=True)
    return values.reshape(rows, seq_len)


class ShuffledStream:
    """An endless, deterministic stream of a split's sequences: epoch e visits every sequence once,
    in the order of a permutation seeded by (seed, e). Position k of the stream is a pure
    function of k, so a resumed run needs only the position to continue where it stopped.

    Training takes it in batches (`batch`): each step's batch lies within one epoch, so it never
    holds a sequence twice; an epoch's last `len % size` sequences, too few for a whole batch, are
    left out of it (as `drop_last` does). Within the first epoch the batches are the stream's
    consecutive positions, as they were before batches were aligned to epochs (DATA_ORDER 1)."""

    def __init__(self, reader: ShardReader, seed: int):
        self.reader = reader
        self.seed = seed
        self._epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.reader))
            self._epoch = epoch
        return self._order

    def take(self, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Sequences at stream positions start, ..., start + count - 1, as a [count, seq_len] int64 array
        (or written into `out`, an integer array of that shape)."""
        rows = np.empty((count, self.reader.seq_len), dtype=np.int64) if out is None else out
        for i in range(count):
            epoch, offset = divmod(start + i, len(self.reader))
            rows[i] = self.reader[int(self._permutation(epoch)[offset])]
        return rows

    def batch(self, step: int, size: int, start: int = 0, stop: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Sequences start, ..., stop - 1 of the `size` distinct sequences of batch `step`, as a
        [stop - start, seq_len] int64 array (or written into `out`, an integer array of that shape): a
        process reads only its share of a global batch."""
        stop = size if stop is None else stop
        per_epoch = len(self.reader) // size
        if per_epoch == 0:
            raise ShardError(f"{self.reader.split_dir}: {len(self.reader)} sequences, fewer than a step's {size} "
                             f"(a batch of distinct sequences needs a larger split or a smaller batch_sequences)")
        epoch, index = divmod(step, per_epoch)
        order = self._permutation(epoch)
        rows = np.empty((stop - start, self.reader.seq_len), dtype=np.int64) if out is None else out
        for i in range(start, stop):
            rows[i - start] = self.reader[int(order[index * size + i])]
        return rows
