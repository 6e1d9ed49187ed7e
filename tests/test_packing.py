"""Packing is a pure function: table-driven checks of rows, EOS placement, drops and budgets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rewarm.data.packing import Packer, ShardWriter, token_dtype

EOS = 0


@pytest.mark.parametrize(
    "vocab, dtype",
    [
        (256, np.uint8),  # ids 0..255 fit a byte
        (257, np.uint16),
        (50_304, np.uint16),  # Pythia's embedding size
        (65_536, np.uint16),
        (65_537, np.uint32),
        (128_256, np.uint32),  # Llama 3
    ],
)
def test_narrowest_dtype(vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)


# (documents in batches, seq_len, max_tokens) -> (rows, tokens dropped, documents read)
CASES = [
    # one doc [1,2,3]+EOS = 4 tokens, seq_len 2: two full rows, nothing dropped
    ([[[1, 2, 3]]], 2, None, [[1, 2], [3, EOS]], 0, 1),
    # 4 + 3 = 7 tokens, seq_len 3: two rows, last token dropped
    ([[[1, 2, 3], [4, 5]]], 3, None, [[1, 2, 3], [EOS, 4, 5]], 1, 2),
    # documents split across batches pack exactly as one batch would
    ([[[1, 2, 3]], [[4, 5]]], 3, None, [[1, 2, 3], [EOS, 4, 5]], 1, 2),
    # an empty-token document still contributes its EOS
    ([[[], [7]]], 3, None, [[EOS, 7, EOS]], 0, 2),
    # budget of 4 tokens at seq_len 2: two rows; the third document is not read
    ([[[1], [2, 3], [4, 5, 6]]], 2, 4, [[1, EOS], [2, 3]], 1, 2),
    # a budget that is not a multiple of seq_len counts whole rows only (5 -> 4 tokens)
    ([[[1, 2, 3, 4, 5, 6, 7]]], 2, 5, [[1, 2], [3, 4]], 4, 1),
    # too little for one row: nothing written, everything dropped
    ([[[1]]], 4, None, [], 2, 1),
]


@pytest.mark.parametrize("batches, seq_len, max_tokens, rows, dropped, documents", CASES)
def test_packer(batches, seq_len, max_tokens, rows, dropped, documents):
    packer = Packer(seq_len, EOS, np.uint16, max_tokens)
    out = [packer.add(batch) for batch in batches]
    got = np.concatenate(out) if out else np.empty((0, seq_len))
    assert got.tolist() == rows
    assert got.dtype == np.uint16
    assert packer.dropped_tokens() == dropped
    assert packer.documents == documents
    assert packer.rows_out == len(rows)


def test_a_prefix_goes_before_every_document():
    """A family's BOS (9): BOS + document + EOS, counted in the budget as the document's own tokens are."""
    packer = Packer(4, EOS, np.uint16, max_tokens=8, prefix=[9])
    assert packer.add([[1, 2], [3], [4, 5, 6]]).tolist() == [[9, 1, 2, EOS], [9, 3, EOS, 9]]
    assert packer.documents == 3 and packer.done and packer.frame == 2


def test_budget_stops_further_batches():
    packer = Packer(2, EOS, np.uint16, max_tokens=2)
    assert packer.add([[1, 2, 3]]).tolist() == [[1, 2]]
    assert packer.done
    assert packer.add([[9, 9, 9]]).shape == (0, 2)
    assert packer.documents == 1


def test_shard_writer_splits_rows_into_files(tmp_path):
    writer = ShardWriter(tmp_path, seq_len=3, dtype=np.uint16, shard_sequences=4)
    rows = np.arange(30, dtype=np.uint16).reshape(10, 3)
    writer.add(rows[:3])
    writer.add(rows[3:])
    files = writer.close()
    assert files == [("shard-00000.arrow", 4), ("shard-00001.arrow", 4), ("shard-00002.arrow", 2)]
    tables = [pa.ipc.open_stream(str(tmp_path / name)).read_all() for name, _ in files]
    assert tables[0].schema.field("input_ids").type == pa.list_(pa.uint16(), 3)
    back = np.concatenate([np.array(t.column("input_ids").to_pylist()) for t in tables])
    assert back.tolist() == rows.tolist()
