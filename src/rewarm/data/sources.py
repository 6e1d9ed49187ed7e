"""Readers that yield document texts from one source.

JSON lines (plain or zstd-compressed, as the Pile and SlimPajama ship) and
Hugging Face datasets (streamed). The embedded demo is written as `.jsonl.zst`
by `rewarm.data.demo` and read here like real data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from rewarm.config import DemoSource, HfSource, JsonlSource, Source
from rewarm.io import file_sha256, resolve_glob

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


class CorpusError(ValueError):
    """A bad record or file in a corpus, naming the file and line."""


@dataclass
class ReadStats:
    """Counts kept while reading, for the manifest."""

    documents: int = 0
    """Non-empty documents yielded."""
    empty: int = 0
    """Empty (or whitespace-only) documents skipped."""
    bad: int = 0
    """Bad records skipped (only with on_bad_record='skip')."""
    bad_examples: list[str] = field(default_factory=list)
    """The first few bad-record messages, for the log."""


def demo_path(raw_dir: str | Path, corpus: str, split: str, file: int = 0, files: int = 1) -> Path:
    """Where `rewarm generate` writes (file `file` of `files` of) a demo source."""
    if files == 1:
        return Path(raw_dir) / corpus / f"{split}.jsonl.zst"
    return Path(raw_dir) / corpus / f"{split}-{file:05d}-of-{files:05d}.jsonl.zst"


def source_files(source: Source, corpus: str, split: str, raw_dir: str | Path, base_dir: str | Path = ".") -> list[Path]:
    """The local files a source reads, in order (none for a hub dataset)."""
    if isinstance(source, DemoSource):
        return [demo_path(raw_dir, corpus, split, i, source.files) for i in range(source.files)]
    if isinstance(source, JsonlSource):
        files = resolve_glob(source.path, base_dir)
        if not files:
            raise CorpusError(f"{source.path}: matches no file")
        return files
    return []


def describe(source: Source, files: list[Path]) -> str:
    if isinstance(source, HfSource):
        rev = f"@{source.revision}" if source.revision else ""
        cfg = f" ({source.name})" if source.name else ""
        return f"hf:{source.path}{cfg}{rev} split={source.split}"
    return f"{source.type}: " + ", ".join(str(f) for f in files)


def fingerprint(source: Source, files: list[Path]) -> str:
    """A stable hash of what the source reads: for files, their names, sizes and full content."""
    return fingerprint_of(source, [{"name": path.name, "size": path.stat().st_size, "sha256": file_sha256(path)} for path in files])


def fingerprint_of(source: Source, files: list[dict]) -> str:
    """`fingerprint` from the files' recorded name, size and sha256 (as `prepare`'s parts record them)."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in vars(source).items()}, sort_keys=True, default=str).encode())
    for file in files:
        digest.update(file["name"].encode())
        digest.update(str(file["size"]).encode())
        digest.update(file["sha256"].encode())
    return digest.hexdigest()


def read_documents(
    source: Source, files: list[Path], stats: ReadStats, on_bad_record: str = "error"
) -> Iterator[str]:
    """Yield the non-empty document texts of a source, in order."""
    return (text for text, _ in read_parts(source, files, stats, on_bad_record))


def read_parts(
    source: Source, files: list[Path], stats: ReadStats, on_bad_record: str = "error", part_field: str | None = None
) -> Iterator[tuple[str, str | None]]:
    """Yield (text, part) for the non-empty documents of a source, in order; `part` is the value of
    the dotted metadata field `part_field` (e.g. `meta.redpajama_set_name`), None without one."""
    if isinstance(source, HfSource):
        origin = describe(source, files)
        for number, row in enumerate(read_hf(source), start=1):
            yield from _accept(row, origin, number, "row", stats, on_bad_record, source.text_field, part_field)
        return
    field_name = source.text_field if isinstance(source, JsonlSource) else "text"
    for path in files:
        yield from read_jsonl_parts(path, field_name, stats, on_bad_record, part_field)


def read_jsonl(path: str | Path, text_field: str, stats: ReadStats, on_bad_record: str = "error") -> Iterator[str]:
    """Texts of a `.jsonl`, `.jsonl.zst` or `.jsonl.gz` file. Bad records raise CorpusError naming file and
    line, or are counted and skipped with on_bad_record='skip'."""
    return (text for text, _ in read_jsonl_parts(path, text_field, stats, on_bad_record))


def read_jsonl_parts(
    path: str | Path, text_field: str, stats: ReadStats, on_bad_record: str = "error", part_field: str | None = None
) -> Iterator[tuple[str, str | None]]:
    """(text, part) of a `.jsonl` or `.jsonl.zst` file, `part` the value of the dotted field `part_field`."""
    for number, line in iter_lines(path):
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            yield from _bad(f"{path}:{number}: invalid UTF-8 ({error.reason} at byte {error.start})", stats, on_bad_record)
            continue
        except json.JSONDecodeError as error:
            yield from _bad(f"{path}:{number}: not valid JSON ({error.msg}, column {error.colno})", stats, on_bad_record)
            continue
        except RecursionError:
            yield from _bad(f"{path}:{number}: JSON nested too deeply to read", stats, on_bad_record)
            continue
        except ValueError as error:  # an integer of more digits than Python converts (4,300)
            yield from _bad(f"{path}:{number}: not readable JSON ({str(error).split(';')[0]})", stats, on_bad_record)
            continue
        if not isinstance(record, dict):
            yield from _bad(f"{path}:{number}: expected a JSON object, got {type(record).__name__}", stats, on_bad_record)
            continue
        yield from _accept(record, str(path), number, "line", stats, on_bad_record, text_field, part_field)


_MISSING = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: JSON's `\\ud800` escape decodes to one, and UTF-8 cannot encode it."""


def field_value(record: dict, dotted: str):
    """The value at a dotted path (`meta.pile_set_name`), or _MISSING."""
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _accept(record: dict, origin: str, number: int, unit: str, stats: ReadStats, on_bad_record: str, text_field: str,
            part_field: str | None) -> Iterator[tuple[str, str | None]]:
    text = record.get(text_field, _MISSING)
    part = None if part_field is None else field_value(record, part_field)
    if text is _MISSING:
        yield from _bad(f"{origin}:{number}: {unit} has no field {text_field!r}", stats, on_bad_record)
    elif not isinstance(text, str):
        yield from _bad(
            f"{origin}:{number}: field {text_field!r} is {type(text).__name__}, expected a string", stats, on_bad_record
        )
    elif part is _MISSING or (part is not None and not isinstance(part, str)):
        shown = "no field" if part is _MISSING else f"a {type(part).__name__} in field"
        yield from _bad(f"{origin}:{number}: {unit} has {shown} {part_field!r} (the mixture's field; a string expected)",
                        stats, on_bad_record)
    elif (surrogate := _SURROGATE.search(text)) is not None:
        yield from _bad(f"{origin}:{number}: field {text_field!r} holds a lone surrogate (\\u{ord(surrogate[0]):x}): not Unicode "
                        f"text, which no tokenizer can encode", stats, on_bad_record)
    elif not text.strip():
        stats.empty += 1
    else:
        stats.documents += 1
        yield text, part


def _bad(message: str, stats: ReadStats, on_bad_record: str) -> Iterator[str]:
    if on_bad_record == "error":
        raise CorpusError(message + " (set prepare.on_bad_record: skip to skip and count bad records)")
    stats.bad += 1
    if len(stats.bad_examples) < 5:
        stats.bad_examples.append(message)
    return iter(())


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a text file, decompressing `.zst` (and `.gz`) on the fly.

    A truncated or corrupt zstd stream raises CorpusError naming the file and the
    line reached: `zstandard`'s stream reader ends silently on a truncated frame,
    so frames are decoded here and each must reach its end.
    """
    path = Path(path)
    number = 0
    pending = b""
    for chunk in _decoded_chunks(path, lambda: number + 1):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if pending.strip():
        yield number + 1, pending


def _decoded_chunks(path: Path, line_reached) -> Iterator[bytes]:
    if path.suffix == ".gz":  # gzip, as some of the Pile's mirrors ship it
        yield from _gzip_chunks(path, line_reached)
        return
    with open(path, "rb") as f:
        if path.suffix != ".zst":
            while chunk := f.read(_CHUNK_BYTES):
                yield chunk
            return
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        in_frame = False
        while raw := f.read(_CHUNK_BYTES):
            while raw:
                try:
                    out = decompressor.decompress(raw)
                except zstandard.ZstdError as error:
                    raise CorpusError(f"{path}:{line_reached()}: corrupt zstd data ({error})") from None
                in_frame = True
                if out:
                    yield out
                raw = b""
                if decompressor.eof:  # a file may hold several frames
                    raw = decompressor.unused_data
                    decompressor = zstandard.ZstdDecompressor().decompressobj()
                    in_frame = False
        if in_frame:
            raise CorpusError(f"{path}:{line_reached()}: truncated zstd stream (file ends inside a frame)")


def _gzip_chunks(path: Path, line_reached) -> Iterator[bytes]:
    """A gzip file's decompressed bytes; a corrupt or truncated one raises CorpusError naming the file and line."""
    import gzip
    import zlib

    with gzip.open(path, "rb") as f:
        while True:
            try:
                chunk = f.read(_CHUNK_BYTES)
            except (OSError, EOFError, zlib.error) as error:
                raise CorpusError(f"{path}:{line_reached()}: corrupt or truncated gzip data ({error})") from None
            if not chunk:
                return
            yield chunk


def read_hf(source: HfSource) -> Iterator[dict]:
    """Stream the rows of a Hugging Face dataset (hub id, builder name or local directory)."""
    yield from open_hf(source)


def open_hf(source: HfSource):
    """The dataset as a streamed `datasets.IterableDataset` (nothing is downloaded yet)."""
    import datasets

    return datasets.load_dataset(
        source.path,
        name=source.name,
        split=source.split,
        revision=source.revision,
        data_files=source.data_files,
        streaming=True,
    )


@dataclass(frozen=True)
class Unit:
    """The smallest piece of a split that `prepare` packs on its own: one input file, or one shard
    (data file) of a streamed dataset. Parts are contiguous groups of units."""

    index: int
    name: str
    """For logs and the manifest: the file's path, or `shard i of n`."""
    weight: int
    """The unit's share of a token budget: its file's size in bytes, 1 for a dataset's shard."""
    file: Path | None = None


class SplitSource:
    """One split's source as units. A hub dataset is opened (streamed, metadata only) once, here;
    its shards are `IterableDataset.shard(num_shards=n_shards, index=i)`, one data file each."""

    def __init__(self, source: Source, corpus: str, split: str, raw_dir: str | Path, base_dir: str | Path = "."):
        self.source = source
        self.files = source_files(source, corpus, split, raw_dir, base_dir)
        if isinstance(source, HfSource):
            self._dataset = open_hf(source)
            count = self._dataset.n_shards
            self.units = [Unit(i, f"shard {i + 1} of {count}", 1) for i in range(count)]
        else:
            self._dataset = None
            self.units = [Unit(i, str(path), path.stat().st_size if path.exists() else 0, path)
                          for i, path in enumerate(self.files)]

    def read(self, unit: Unit, stats: ReadStats, on_bad_record: str = "error",
             part_field: str | None = None) -> Iterator[tuple[str, str | None]]:
        """(text, part) of the non-empty documents of one unit, in order (as `read_parts`)."""
        source = self.source
        if self._dataset is None:
            field_name = source.text_field if isinstance(source, JsonlSource) else "text"
            yield from read_jsonl_parts(unit.file, field_name, stats, on_bad_record, part_field)
            return
        origin = describe(source, [])
        if len(self.units) > 1:
            origin += f" {unit.name}"
        rows = self._dataset.shard(num_shards=len(self.units), index=unit.index, contiguous=True)
        for number, row in enumerate(rows, start=1):
            yield from _accept(row, origin, number, "row", stats, on_bad_record, source.text_field, part_field)


def part_units(count: int, parts: int, part: int) -> range:
    """The units of part `part` of `parts`: a contiguous group, the groups as even as they can be
    (the first parts take the extra units)."""
    return range(-(-part * count // parts), -(-(part + 1) * count // parts))


def allocate(total: int, weights: list[int]) -> list[int]:
    """`total` split in whole shares proportional to `weights`, summing to `total` (largest
    remainder; ties go to the earlier unit). All-zero weights share equally."""
    if not weights:
        return []
    if not any(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares
