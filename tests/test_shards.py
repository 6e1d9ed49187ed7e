"""The training reader: random access across shards, checks on load, bounded memory."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from rewarm.data.packing import SCHEMA_VERSION, ShardWriter
from rewarm.data.shards import MANIFEST, ShardError, ShardReader
from rewarm.io import file_sha256
from tests.project import run_env


def make_split(path, rows: np.ndarray, shard_sequences: int, fingerprint: str = "f" * 64):
    path.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(path, rows.shape[1], rows.dtype, shard_sequences)
    for start in range(0, len(rows), 1000):
        writer.add(rows[start : start + 1000])
    files = writer.close()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tokenizer": {"fingerprint": fingerprint},
        "seq_len": rows.shape[1],
        "sequences": len(rows),
        "shards": [
            {"file": n, "rows": r, "bytes": (path / n).stat().st_size, "sha256": file_sha256(path / n)} for n, r in files
        ],
    }
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.fixture
def split(tmp_path):
    rows = np.arange(50 * 8, dtype=np.uint16).reshape(50, 8)
    return make_split(tmp_path / "split", rows, shard_sequences=16), rows


def test_random_access_across_shards(split):
    path, rows = split
    reader = ShardReader(path)
    assert len(reader) == 50 and reader.seq_len == 8
    for i in [0, 15, 16, 17, 31, 32, 48, 49, -1]:
        assert reader[i].tolist() == rows[i].tolist()
    with pytest.raises(IndexError):
        reader[50]


@pytest.mark.fault
def test_altered_shard_is_detected(split):
    path, _ = split
    shard = path / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00001.arrow: checksum does not match"):
        ShardReader(path)


@pytest.mark.fault
def test_a_corrupt_shard_read_unverified_names_the_shard(split, tmp_path):
    """A process that reads shards another verified (verify=False) still names the file when one is
    unreadable: pyarrow reports a corrupt stream header, or an IPC file's footer (schemas 1 and 2),
    as a bare error that names nothing."""
    path, rows = split
    shard = path / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[8] ^= 0xFF  # inside the stream's schema message
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-00001.arrow: not a readable shard"):
        ShardReader(path, verify=False)
    old = write_file_format_split(tmp_path / "v2", rows[:16])
    footer = bytearray((old / "shard-00000.arrow").read_bytes())
    footer[-100] ^= 0xFF
    (old / "shard-00000.arrow").write_bytes(bytes(footer))
    with pytest.raises(ShardError, match=r"shard-00000.arrow: not a readable shard"):
        ShardReader(old, verify=False)


def write_file_format_split(path, rows: np.ndarray):
    """A split as schema 2 wrote it: the shard in Arrow's IPC file format."""
    import pyarrow as pa

    from rewarm.data.packing import rows_to_table

    path.mkdir(parents=True)
    table = rows_to_table(rows)
    with pa.OSFile(str(path / "shard-00000.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    shard = path / "shard-00000.arrow"
    manifest = {"schema_version": 2, "tokenizer": {"fingerprint": "f" * 64}, "seq_len": rows.shape[1],
                "shards": [{"file": shard.name, "rows": len(rows), "bytes": shard.stat().st_size, "sha256": file_sha256(shard)}]}
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def test_shards_open_in_datasets_and_pyarrow_without_a_copy_and_older_ones_still_read(split, tmp_path):
    """Schema 3 writes each shard as an Arrow IPC stream: `datasets.Dataset.from_file` opens it (it could
    not open schema 2's IPC files) and pyarrow memory-maps it; a split of schema 2 is still read."""
    import datasets
    import pyarrow as pa

    path, rows = split
    assert json.loads((path / MANIFEST).read_text())["schema_version"] == SCHEMA_VERSION == 3
    dataset = datasets.Dataset.from_file(str(path / "shard-00001.arrow"))
    assert dataset.num_rows == 16 and dataset[3]["input_ids"] == rows[16 + 3].tolist()
    mapped = pa.ipc.open_stream(pa.memory_map(str(path / "shard-00001.arrow"), "r")).read_all()
    values = mapped.column("input_ids").chunk(0).flatten().to_numpy(zero_copy_only=True)  # raises if it had to copy
    assert values.reshape(-1, 8).tolist() == rows[16:32].tolist()
    old = ShardReader(write_file_format_split(tmp_path / "v2", rows[:16]))
    assert [old[i].tolist() for i in range(16)] == rows[:16].tolist()


@pytest.mark.fault
def test_shards_are_hashed_once_and_an_altered_one_is_still_refused(split, tmp_path, monkeypatch):
    """With a stamp (a run's restarts and resumes), a shard is hashed the first time only; writing to
    one afterwards, even restoring its modification time, makes it hashed again, and refused."""
    import os

    from rewarm.data import shards

    calls = []
    monkeypatch.setattr(shards, "file_sha256", lambda path: calls.append(path.name) or file_sha256(path))
    path, rows = split
    stamp = tmp_path / "state/verified-shards.json"
    first = ShardReader(path, shards.VerifiedStamp(stamp))
    assert len(calls) == 4  # 50 sequences in shards of 16: 4 shards, each hashed once
    again = ShardReader(path, shards.VerifiedStamp(stamp))
    assert len(calls) == 4 and again[49].tolist() == first[49].tolist() == rows[49].tolist()
    shard = path / "shard-00001.arrow"
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same modification time
    with pytest.raises(ShardError, match=r"shard-00001.arrow: checksum does not match"):
        ShardReader(path, shards.VerifiedStamp(stamp))
    assert calls[4:] == ["shard-00001.arrow"]  # only the changed file was hashed again


@pytest.mark.fault
def test_truncated_shard_is_detected(split):
    path, _ = split
    shard = path / "shard-00002.arrow"
    shard.write_bytes(shard.read_bytes()[:-64])
    with pytest.raises(ShardError, match=r"shard-00002.arrow: \d+ bytes, the manifest says \d+"):
        ShardReader(path)


@pytest.mark.bad_input
def test_missing_manifest_and_wrong_tokenizer(split, tmp_path):
    path, _ = split
    with pytest.raises(ShardError, match="expected 000000000000"):
        ShardReader(path, tokenizer_fingerprint="0" * 64)
    with pytest.raises(ShardError, match="no manifest"):
        ShardReader(tmp_path / "nowhere")


RSS_PROBE = """
import random, sys
from rewarm.data.shards import ShardReader

def resident(kind):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(kind + ":"))

def read_randomly(path):
    reader = ShardReader(path, verify=True)
    rng = random.Random(0)
    for _ in range(2000):
        int(reader[rng.randrange(len(reader))].sum())
    return reader

read_randomly(sys.argv[1])  # a small split first: imports and Arrow's pools are paid here
anon_before = resident("RssAnon")
reader = read_randomly(sys.argv[2])
print(len(reader), resident("RssAnon") - anon_before, resident("RssFile"))
"""


def test_resident_memory_does_not_grow_with_corpus_size(tmp_path):
    """Opening, verifying and randomly reading a 200 MB split adds a few MB of private memory,
    not 200: the shards are memory-mapped, so what is touched is reclaimable page cache
    (RssFile, which the kernel maps in 64 KB around each access), not a copy."""
    seq_len = 1024
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 50_000, size=(100_000, seq_len), dtype=np.uint16)  # 200 MB of tokens
    path = make_split(tmp_path / "big", rows, shard_sequences=10_000)
    small = make_split(tmp_path / "small", rows[:1000], shard_sequences=500)
    del rows
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(small), str(path)], capture_output=True, text=True, env=run_env(), check=True
    )
    sequences, anon_grown, file_mapped = map(int, out.stdout.split())
    assert sequences == 100_000
    assert anon_grown < 8 * 2**20, f"private memory grew by {anon_grown / 2**20:.1f} MiB reading a 200 MB split"
    assert file_mapped > 2000 * seq_len * 2  # the sequences read really came through the mapping


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["../../outside.arrow", "/etc/passwd", "sub/shard.arrow", ".."])
def test_a_manifest_naming_a_file_outside_its_directory_is_refused(split, tmp_path, name):
    path, _ = split
    (tmp_path / "outside.arrow").write_bytes((path / "shard-00001.arrow").read_bytes())
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["shards"][0]["file"] = name
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=rf"{path / MANIFEST}: shard '{re.escape(name)}' is not a file name inside"):
        ShardReader(path)


@pytest.mark.bad_input
@pytest.mark.parametrize("edit, where", [
    (lambda m: m.pop("seq_len"), "at the top level, 'seq_len' is a required property"),
    (lambda m: m["shards"][1].pop("sha256"), "at shards[1], 'sha256' is a required property"),
    (lambda m: m["shards"][0].update(rows="many"), "at shards[0].rows, 'many' is not of type 'integer'"),
    (lambda m: m["tokenizer"].pop("fingerprint"), "at tokenizer, 'fingerprint' is a required property"),
])
def test_an_incomplete_manifest_is_refused_naming_the_file_and_field(split, edit, where):
    """A manifest one stage wrote for others, edited or cut short, is refused on read naming the file and the
    field (checked against a JSON Schema by jsonschema), not a KeyError wherever it is used."""
    path, _ = split
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as caught:
        ShardReader(path)
    assert str(caught.value) == f"{path / MANIFEST}: manifest is incomplete or altered: {where}"
