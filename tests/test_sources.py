"""Readers: JSON lines plain and zstd (Pile and SlimPajama as they ship), Hugging Face
datasets on local files, and every kind of bad input, named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from rewarm import config as cfg
from rewarm.data import sources
from rewarm.data.sources import CorpusError, ReadStats

PILE = [
    {"text": "The first Pile document.", "meta": {"pile_set_name": "Pile-CC"}},
    {"text": "def f(x):\n    return x\n", "meta": {"pile_set_name": "Github"}},
    {"text": "Ünïcödé and emoji 🦜 survive.", "meta": {"pile_set_name": "Wikipedia (en)"}},
]
SLIMPAJAMA = [
    {"text": "A web page from CommonCrawl.", "meta": {"redpajama_set_name": "RedPajamaCommonCrawl"}},
    {"text": "A chapter of a book.", "meta": {"redpajama_set_name": "RedPajamaBook"}},
]


def lines_of(records) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def write_zst(path: Path, data: bytes, checksum: bool = True) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data))
    return path


def read(path, on_bad="error", field="text"):
    stats = ReadStats()
    return list(sources.read_jsonl(path, field, stats, on_bad)), stats


def test_plain_jsonl(tmp_path):
    path = tmp_path / "pile.jsonl"
    path.write_bytes(lines_of(PILE))
    texts, stats = read(path)
    assert texts == [r["text"] for r in PILE]
    assert stats.documents == 3


def test_zstd_pile_and_slimpajama_as_they_ship(tmp_path):
    pile = write_zst(tmp_path / "00.jsonl.zst", lines_of(PILE))
    slim = write_zst(tmp_path / "example_train_0.jsonl.zst", lines_of(SLIMPAJAMA))
    assert read(pile)[0] == [r["text"] for r in PILE]
    assert read(slim)[0] == [r["text"] for r in SLIMPAJAMA]


def test_multi_frame_zstd_and_final_line_without_newline(tmp_path):
    c = zstandard.ZstdCompressor(write_checksum=True)
    data = lines_of(PILE)
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(c.compress(data) + c.compress(lines_of(SLIMPAJAMA).rstrip(b"\n")))
    assert read(path)[0] == [r["text"] for r in PILE + SLIMPAJAMA]


def test_glob_source_reads_files_in_sorted_order(tmp_path):
    (tmp_path / "raw").mkdir()
    write_zst(tmp_path / "raw" / "02.jsonl.zst", lines_of(SLIMPAJAMA))
    write_zst(tmp_path / "raw" / "01.jsonl.zst", lines_of(PILE))
    source = cfg.JsonlSource(type="jsonl", path="raw/*.jsonl.zst")
    files = sources.source_files(source, "upstream", "train", "unused", base_dir=tmp_path)
    texts = list(sources.read_documents(source, files, ReadStats()))
    assert texts == [r["text"] for r in PILE + SLIMPAJAMA]


def test_custom_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(lines_of([{"content": "body one"}, {"content": "body two"}]))
    assert read(path, field="content")[0] == ["body one", "body two"]


def test_empty_documents_are_skipped_and_counted(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines_of([{"text": ""}, {"text": "kept"}, {"text": "  \n "}]) + b"\n\n")
    texts, stats = read(path)
    assert texts == ["kept"]
    assert (stats.documents, stats.empty, stats.bad) == (1, 2, 0)


BAD_LINES = [
    (b'{"text": "ok"}\n{"text": "cut\n', 2, "not valid JSON"),
    (b'{"text": "ok"}\n{"title": "no text"}\n', 2, "has no field 'text'"),
    (b'{"text": 42}\n', 1, "field 'text' is int, expected a string"),
    (b'{"text": null}\n', 1, "field 'text' is NoneType, expected a string"),
    (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "\xff\xfe bad"}\n', 3, "invalid UTF-8"),
    (b'["text", "a list"]\n', 1, "expected a JSON object, got list"),
    (b'{"text": "ok"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", 2, "JSON nested too deeply to read"),
    (b'{"text": "big", "n": 1' + b"0" * 5000 + b"}\n", 1, "not readable JSON (Exceeds the limit (4300 digits)"),
    (b'{"text": "a\\ud800b"}\n', 1, "field 'text' holds a lone surrogate (\\ud800): not Unicode text"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("data, line, message", BAD_LINES)
@pytest.mark.parametrize("compressed", [False, True])
def test_bad_record_names_file_and_line(tmp_path, data, line, message, compressed):
    path = write_zst(tmp_path / "bad.jsonl.zst", data) if compressed else tmp_path / "bad.jsonl"
    if not compressed:
        path.write_bytes(data)
    with pytest.raises(CorpusError) as caught:
        read(path)
    assert f"{path}:{line}: " in str(caught.value)
    assert message in str(caught.value)


def test_skip_mode_counts_bad_records(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(case[0] for case in BAD_LINES) + lines_of(PILE))
    texts, stats = read(path, on_bad="skip")
    assert texts[-3:] == [r["text"] for r in PILE]
    # Each BAD_LINES case holds one bad record; the good ones among them are kept.
    assert stats.bad == len(BAD_LINES)
    assert len(texts) == 3 + 5  # by hand: 5 good lines among the BAD_LINES cases ("ok" x 4, and the one before the deep one)


@pytest.mark.bad_input
def test_truncated_zstd_names_file(tmp_path):
    full = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(lines_of(PILE * 200))
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(full[: len(full) - 20])
    with pytest.raises(CorpusError, match=rf"{path}:\d+: truncated zstd stream"):
        read(path)


@pytest.mark.bad_input
def test_corrupt_zstd_names_file(tmp_path):
    data = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(lines_of(PILE * 200)))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flip.jsonl.zst"
    path.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match=rf"{path}:\d+: "):
        read(path)
    path.write_bytes(b"this is not zstd at all")
    with pytest.raises(CorpusError, match=rf"{path}:1: corrupt zstd data"):
        read(path)


def test_hf_reader_streams_local_files_through_datasets(tmp_path):
    """The hub path is `datasets.load_dataset(..., streaming=True)`; here the json builder reads
    local .jsonl.zst files of the Pile's format (no network in tests)."""
    write_zst(tmp_path / "00.jsonl.zst", lines_of(PILE))
    source = cfg.HfSource(type="hf", path="json", split="train", data_files=[str(tmp_path / "00.jsonl.zst")])
    stats = ReadStats()
    assert list(sources.read_documents(source, [], stats)) == [r["text"] for r in PILE]
    assert stats.documents == 3


def test_hf_reader_on_a_local_dataset_directory(tmp_path):
    """A directory laid out like a hub dataset repository (data/<split>-*.jsonl.zst)."""
    repo = tmp_path / "SlimPajama-mini"
    (repo / "data").mkdir(parents=True)
    write_zst(repo / "data" / "train-00000.jsonl.zst", lines_of(SLIMPAJAMA))
    write_zst(repo / "data" / "validation-00000.jsonl.zst", lines_of(SLIMPAJAMA[:1]))
    train = cfg.HfSource(type="hf", path=str(repo), split="train")
    val = cfg.HfSource(type="hf", path=str(repo), split="validation")
    assert list(sources.read_documents(train, [], ReadStats())) == [r["text"] for r in SLIMPAJAMA]
    assert list(sources.read_documents(val, [], ReadStats())) == [SLIMPAJAMA[0]["text"]]


@pytest.mark.bad_input
def test_hf_reader_missing_or_null_text_names_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(lines_of([{"text": "fine"}, {"body": "no text column"}]))
    absent = cfg.HfSource(type="hf", path="json", split="train", data_files=[str(path)], text_field="content")
    with pytest.raises(CorpusError, match=r"hf:json split=train:1: row has no field 'content'"):
        list(sources.read_documents(absent, [], ReadStats()))
    # datasets fills a column missing from some rows with null: row 2 has no text.
    partial = cfg.HfSource(type="hf", path="json", split="train", data_files=[str(path)])
    with pytest.raises(CorpusError, match=r"hf:json split=train:2: field 'text' is NoneType, expected a string"):
        list(sources.read_documents(partial, [], ReadStats()))


def test_fingerprint_follows_content(tmp_path):
    path = write_zst(tmp_path / "a.jsonl.zst", lines_of(PILE))
    source = cfg.JsonlSource(type="jsonl", path=str(path))
    before = sources.fingerprint(source, [path])
    assert sources.fingerprint(source, [path]) == before
    write_zst(path, lines_of(SLIMPAJAMA))
    assert sources.fingerprint(source, [path]) != before


def test_gzip_jsonl_as_some_pile_mirrors_ship_it(tmp_path):
    import gzip

    path = tmp_path / "00.jsonl.gz"
    path.write_bytes(gzip.compress(lines_of(PILE * 50)))
    texts, stats = read(path)
    assert texts == [r["text"] for r in PILE * 50] and stats.documents == 150


@pytest.mark.bad_input
def test_truncated_or_corrupt_gzip_names_file(tmp_path):
    import gzip

    full = gzip.compress(lines_of(PILE * 200))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CorpusError, match=rf"{path}:\d+: corrupt or truncated gzip data"):
        read(path)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(CorpusError, match=rf"{path}:1: corrupt or truncated gzip data"):
        read(path)
