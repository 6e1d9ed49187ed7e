"""Packing token streams into fixed-length sequences, and the Arrow shards that hold them.

GPT-NeoX packing: each document's tokens are followed by EOS, the documents are
concatenated in order, and the stream is cut into `seq_len`-token rows; the
final partial row is dropped (and counted). Rows go into Arrow IPC files with a
single `input_ids` column of fixed-size lists of the narrowest unsigned type
that holds the vocabulary (uint16 for Pythia's 50,304 ids), so a reader can
memory-map them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 3
"""The manifest's layout. 2: a split is packed unit by unit (input file, or dataset shard), its
shards named `shard-<unit>-<k>.arrow`, and the manifest lists the units; a one-unit split's shard
bytes are those of 1, which packed the whole split as one stream. 3: the layout of 2, each shard in
Arrow's IPC *stream* format, which `datasets.Dataset.from_file` memory-maps (1 and 2 wrote the IPC
file format, which it cannot open). Readers read all three (`STREAM_SCHEMAS`: which are streams)."""
READABLE_SCHEMAS = (1, 2, 3)
STREAM_SCHEMAS = (3,)
COLUMN = "input_ids"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id below `vocab_size`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} ids does not fit in uint32")


class Packer:
    """Turns batches of documents' token ids into complete `seq_len` rows.

    Pure and in-memory: `add` returns the rows completed by a batch and keeps the
    rest; a token budget (`max_tokens`) ends packing once reached.
    """

    def __init__(self, seq_len: int, eos_id: int, dtype: np.dtype, max_tokens: int | None = None, prefix: Sequence[int] = ()):
        """`prefix`: ids put before every document (a family's BOS: `tokenizer.document_prefix`)."""
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.prefix = tuple(prefix)
        self.frame = len(self.prefix) + 1  # the tokens a document gets besides its own
        self.dtype = np.dtype(dtype)
        # The budget counts whole rows only: at most max_tokens tokens are written.
        self.max_rows = None if max_tokens is None else max_tokens // seq_len
        self.rows_out = 0
        self.documents = 0
        self.tokens_in = 0
        self._pending = np.empty(0, dtype=self.dtype)

    @property
    def done(self) -> bool:
        return self.max_rows is not None and self.rows_out >= self.max_rows

    def add(self, documents: Sequence[Sequence[int]]) -> np.ndarray:
        """Rows (shape [n, seq_len]) completed by these documents, each after the prefix and followed by EOS.

        Once the budget is reached the remaining documents are not counted as read.
        """
        if self.done or not documents:
            return np.empty((0, self.seq_len), dtype=self.dtype)
        lengths = np.fromiter((len(d) + self.frame for d in documents), dtype=np.int64, count=len(documents))
        if self.max_rows is not None:
            # Keep only the documents needed to fill the remaining budget.
            needed = (self.max_rows - self.rows_out) * self.seq_len - len(self._pending)
            keep = int(np.searchsorted(np.cumsum(lengths), needed, side="left")) + 1
            documents, lengths = documents[:keep], lengths[:keep]
        stream = np.fromiter(
            itertools.chain.from_iterable(itertools.chain(self.prefix, d, (self.eos_id,)) for d in documents),
            dtype=self.dtype,
            count=int(lengths.sum()),
        )
        self.documents += len(documents)
        self.tokens_in += len(stream)
        stream = np.concatenate([self._pending, stream])
        rows = len(stream) // self.seq_len
        if self.max_rows is not None:
            rows = min(rows, self.max_rows - self.rows_out)
        cut = rows * self.seq_len
        self.rows_out += rows
        self._pending = stream[:0] if self.done else stream[cut:]
        return stream[:cut].reshape(rows, self.seq_len)

    def dropped_tokens(self) -> int:
        """Tokens read but not written: the final partial row (or the overshoot past the budget)."""
        return self.tokens_in - self.rows_out * self.seq_len


class MixtureBudget:
    """Token budgets of a mixture's parts: part p may take round(w_p / sum(w) x max_tokens) tokens
    (a document counts its tokens, its EOS and any prefix: `Packer.frame`). Pure and in-memory: `admit` says whether a
    document is taken, in the order the source is read; the document that crosses its part's
    budget is taken whole, so a part ends at most one document over it."""

    def __init__(self, weights: dict[str, float], max_tokens: int):
        total = sum(weights.values())
        self.weights = dict(weights)
        self.budget = {part: round(weight / total * max_tokens) for part, weight in weights.items()}
        self.tokens = dict.fromkeys(weights, 0)
        self.documents = dict.fromkeys(weights, 0)
        self.other_documents = 0
        """Documents of parts the mixture does not name (skipped)."""
        self.other_parts: dict[str, int] = {}
        """Those documents by part name (the first 50 names), so that a misspelled weight can be told apart."""

    @property
    def full(self) -> bool:
        return all(self.tokens[part] >= budget for part, budget in self.budget.items())

    def admit(self, part: str | None, tokens: int) -> bool:
        if part not in self.budget:
            self.other_documents += 1
            if part in self.other_parts or len(self.other_parts) < 50:
                self.other_parts[str(part)] = self.other_parts.get(str(part), 0) + 1
            return False
        if self.tokens[part] >= self.budget[part]:
            return False
        self.tokens[part] += tokens
        self.documents[part] += 1
        return True

    def give_back(self, part: str, tokens: int) -> None:
        """An admitted document the packer did not take (its budget was reached first)."""
        self.tokens[part] -= tokens
        self.documents[part] -= 1

    def summary(self) -> dict:
        """For the manifest: per part, its weight, target, and the tokens and documents drawn."""
        total = sum(self.tokens.values()) or 1
        return {"parts": {part: {"weight": self.weights[part], "target_tokens": self.budget[part], "tokens": self.tokens[part],
                                 "share": self.tokens[part] / total, "documents": self.documents[part]} for part in self.budget},
                "other_documents_skipped": self.other_documents, "other_parts": dict(sorted(self.other_parts.items()))}


def rows_to_table(rows: np.ndarray) -> pa.Table:
    """An Arrow table with one `input_ids` column of fixed-size lists."""
    seq_len = rows.shape[1]
    values = pa.array(rows.reshape(-1))
    return pa.table({COLUMN: pa.FixedSizeListArray.from_arrays(values, seq_len)})


def write_shard(rows: np.ndarray, path: str | Path) -> None:
    """Write rows as one Arrow IPC stream, one record batch: memory-mapped without a copy by rewarm
    (`ShardReader`), by pyarrow (`pa.ipc.open_stream(pa.memory_map(path))`) and by `datasets`
    (`Dataset.from_file`)."""
    table = rows_to_table(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


class ShardWriter:
    """Buffers rows and writes a shard each `shard_sequences` rows: `<prefix>-00000.arrow`, ..."""

    def __init__(self, out_dir: str | Path, seq_len: int, dtype: np.dtype, shard_sequences: int, prefix: str = "shard"):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.seq_len = seq_len
        self.dtype = np.dtype(dtype)
        self.shard_sequences = shard_sequences
        self.files: list[tuple[str, int]] = []
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self._buffer.append(rows)
            self._buffered += len(rows)
        while self._buffered >= self.shard_sequences:
            self._flush(self.shard_sequences)

    def close(self) -> list[tuple[str, int]]:
        """Write the last, shorter shard; return (file name, rows) of every shard."""
        if self._buffered:
            self._flush(self._buffered)
        return self.files

    def _flush(self, count: int) -> None:
        rows = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        name = f"{self.prefix}-{len(self.files):05d}.arrow"
        write_shard(rows[:count], self.out_dir / name)
        self.files.append((name, count))
        rest = rows[count:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
