"""The `prepare` stage end to end through the real command line: round trip, manifest,
determinism across worker counts, budgets, atomicity when killed, and clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rewarm.data import sources
from rewarm.data import tokenizer as tok
from rewarm.data.shards import ShardReader
from tests.conftest import rewarm, run_env, small_params, write_params


def prepare(project: Path, corpus: str = "upstream", workers: int = 1, out: str | None = None, check: bool = True):
    out = out or f"data/tokens/{corpus}"
    return rewarm(
        "prepare", "--corpus", corpus, "--tokenizer", "data/tokenizer", "--out", out, "--workers", str(workers),
        cwd=project, check=check,
    )


def shard_digests(split_dir: Path) -> dict[str, str]:
    return {p.name: sources.file_sha256(p) for p in sorted(split_dir.iterdir())}


@pytest.fixture(scope="module")
def prepared(small_project, tmp_path_factory) -> Path:
    """The small project's upstream corpus prepared with one worker, into a separate directory."""
    out = tmp_path_factory.mktemp("prepared") / "upstream"
    prepare(small_project, out=str(out))
    return out


def documents(project: Path, corpus: str, split: str) -> list[str]:
    return list(sources.read_jsonl(sources.demo_path(project / "data/raw", corpus, split), "text", sources.ReadStats()))


def test_round_trip_gives_back_the_documents_in_order(small_project, prepared):
    hf = tok.load(small_project / "data/tokenizer")
    for split in ("train", "val"):
        reader = ShardReader(prepared / split, tokenizer_fingerprint=tok.fingerprint(hf))
        stream = np.concatenate([reader[i] for i in range(len(reader))]).astype(np.int64)
        pieces = np.split(stream, np.flatnonzero(stream == hf.eos_token_id) + 1)
        decoded = [hf.decode(piece[:-1].tolist()) for piece in pieces if len(piece) and piece[-1] == hf.eos_token_id]
        docs = documents(small_project, "upstream", split)
        # Every document up to the last full row comes back, in order; the tail was dropped.
        assert decoded == docs[: len(decoded)]
        assert len(decoded) >= len(docs) - 3


def test_manifest_describes_the_shards(small_project, prepared):
    manifest = json.loads((prepared / "train" / "manifest.json").read_text())
    hf = tok.load(small_project / "data/tokenizer")
    assert manifest["schema_version"] == 1
    assert (manifest["corpus"], manifest["split"]) == ("upstream", "train")
    assert manifest["tokenizer"]["fingerprint"] == tok.fingerprint(hf)
    assert manifest["dtype"] == "uint16" and manifest["seq_len"] == 64
    assert manifest["documents_read"] == 600 and manifest["documents_skipped"] == 0
    assert manifest["tokens_written"] == manifest["sequences"] * 64
    assert 0 <= manifest["tokens_dropped"] < 64
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["sequences"]
    assert [s["file"] for s in manifest["shards"]] == sorted(p.name for p in (prepared / "train").glob("*.arrow"))
    assert all(s["rows"] == 128 for s in manifest["shards"][:-1])
    assert manifest["source"]["config"]["type"] == "demo"
    assert "upstream/train.jsonl.zst" in manifest["source"]["description"]
    assert len(manifest["source"]["fingerprint"]) == 64


def test_output_is_identical_for_any_worker_count(project_copy, prepared):
    prepare(project_copy, workers=2)
    for split in ("train", "val"):
        assert shard_digests(project_copy / "data/tokens/upstream" / split) == shard_digests(prepared / split)


def test_token_budget_stops_reading(project_copy):
    params = small_params()
    params["corpora"]["downstream"]["train"]["max_tokens"] = 1000
    write_params(project_copy / "params.yaml", params)
    prepare(project_copy, corpus="downstream")
    manifest = json.loads((project_copy / "data/tokens/downstream/train/manifest.json").read_text())
    assert manifest["tokens_written"] == (1000 // 64) * 64
    assert manifest["sequences"] == 15
    assert manifest["documents_read"] < 600


def with_extra_corpus(project: Path, content: bytes, **overrides) -> None:
    """Add a held-out corpus `extra` read from a JSON-lines file with this content."""
    (project / "extra.jsonl").write_bytes(content)
    params = small_params(**overrides)
    params["corpora"]["extra"] = {"val": {"type": "jsonl", "path": "extra.jsonl"}}
    write_params(project / "params.yaml", params)


def test_skip_mode_counts_bad_records_in_manifest(project_copy):
    content = b'{"text": "good one"}\nnot json\n{"text": ""}\n{"text": "good two"}\n{"text": 3}\n'
    with_extra_corpus(project_copy, content, prepare={"on_bad_record": "skip"})
    prepare(project_copy, corpus="extra")
    manifest = json.loads((project_copy / "data/tokens/extra/val/manifest.json").read_text())
    assert (manifest["documents_read"], manifest["records_skipped_bad"], manifest["documents_skipped_empty"]) == (2, 2, 1)
    assert manifest["documents_skipped"] == 3


@pytest.mark.bad_input
def test_bad_record_fails_naming_file_and_line(project_copy):
    with_extra_corpus(project_copy, b'{"text": "fine"}\n{"text": "broken\n')
    result = prepare(project_copy, corpus="extra", check=False)
    assert result.returncode == 1
    assert "extra.jsonl:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project_copy / "data/tokens/extra").exists()
    assert not list((project_copy / "data/tokens").glob("extra.partial-*"))


@pytest.mark.bad_input
def test_empty_source_is_refused(project_copy):
    with_extra_corpus(project_copy, b"")
    result = prepare(project_copy, corpus="extra", check=False)
    assert result.returncode == 1 and "extra/val: no documents read" in result.stderr


@pytest.mark.bad_input
def test_bad_parameters_fail_before_any_work(project_copy):
    write_params(project_copy / "params.yaml", small_params(prepare={"seq_len": 0, "workers": 4}))
    result = prepare(project_copy, check=False)
    assert result.returncode == 2
    assert "prepare.seq_len: 0 must be a positive integer" in result.stderr
    assert "prepare.workers: unknown key" in result.stderr
    assert not (project_copy / "data/tokens").exists()


@pytest.mark.fault
def test_killed_run_leaves_nothing_that_looks_complete(project_copy, prepared):
    # Small shards so that the run is killed between shards, mid-split.
    params = small_params(prepare={"shard_sequences": 8, "batch_documents": 8})
    write_params(project_copy / "params.yaml", params)
    tokens = project_copy / "data/tokens"
    command = [sys.executable, "-m", "rewarm", "prepare", "--corpus", "upstream", "--tokenizer", "data/tokenizer", "--out", "data/tokens/upstream"]
    process = subprocess.Popen(command, cwd=project_copy, env=run_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tokens.glob("upstream.partial-*/train/shard-00003.arrow")):
        assert process.poll() is None, "prepare finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tokens / "upstream").exists()  # only the partial directory is left
    assert list(tokens.glob("upstream.partial-*"))
    prepare(project_copy)
    assert not list(tokens.glob("upstream.partial-*"))  # the rerun cleaned up
    # The rerun equals an uninterrupted run with the same settings.
    reference = project_copy / "reference"
    prepare(project_copy, out=str(reference))
    for split in ("train", "val"):
        assert shard_digests(tokens / "upstream" / split) == shard_digests(reference / split)
    assert len(list((tokens / "upstream/train").glob("*.arrow"))) > 4


# -- mixtures: a source sampled by a metadata field with weights ---------------------------------------

PART_WORDS = {"alpha": "apple bread cheese", "beta": "river stone cloud", "gamma": "seven eight nine ten", "other": "zzz qqq"}


def multi_set_corpus(path: Path, documents: int, seed: int = 0) -> None:
    """A SlimPajama-format corpus whose parts come in 60 / 25 / 10 / 5 proportions (the last one not
    in the mixture), each document a few words of its part, marked with its part's name."""
    import random

    rng = random.Random(seed)
    parts = rng.choices(list(PART_WORDS), weights=[60, 25, 10, 5], k=documents)
    lines = [json.dumps({"text": f"{part} " + " ".join(rng.choice(PART_WORDS[part].split()) for _ in range(rng.randint(5, 40))),
                         "meta": {"redpajama_set_name": part}}) for part in parts]
    path.write_text("\n".join(lines) + "\n")


def with_mixture(project: Path, weights: dict, max_tokens: int | None, documents: int = 3000) -> None:
    multi_set_corpus(project / "mixed.jsonl", documents)
    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "jsonl", "path": "mixed.jsonl", "max_tokens": max_tokens,
                                          "mixture": {"field": "meta.redpajama_set_name", "weights": weights}}}
    write_params(project / "params.yaml", params)


def test_a_mixture_draws_the_declared_shares(project_copy):
    """Weights 1 / 1 / 2 against natural proportions 60 / 25 / 10: the shares written, counted here by
    decoding the shards back into documents, are the weights' within one document's tokens per part."""
    weights, budget = {"alpha": 1.0, "beta": 1.0, "gamma": 2.0}, 20_000
    with_mixture(project_copy, weights, budget)
    prepare(project_copy, corpus="extra")
    split = project_copy / "data/tokens/extra/val"
    hf = tok.load(project_copy / "data/tokenizer")
    reader = ShardReader(split, tokenizer_fingerprint=tok.fingerprint(hf))
    stream = np.concatenate([reader[i] for i in range(len(reader))]).astype(np.int64)
    pieces = np.split(stream, np.flatnonzero(stream == hf.eos_token_id) + 1)
    drawn = dict.fromkeys(PART_WORDS, 0)
    whole = [piece for piece in pieces if len(piece) and piece[-1] == hf.eos_token_id]  # the last row may cut one short
    for piece in whole:
        drawn[hf.decode(piece[:-1].tolist()).split()[0]] += len(piece)  # its tokens and its EOS
    assert drawn["other"] == 0  # a part the mixture does not name is skipped
    assert len(reader) * reader.seq_len == budget // 64 * 64  # the budget holds exactly, in whole rows
    longest = max(len(p) for p in whole)
    for part, weight in weights.items():
        target = weight / sum(weights.values()) * budget
        assert abs(drawn[part] - target) <= 2 * longest, (part, drawn, target)
    manifest = json.loads((split / "manifest.json").read_text())
    assert manifest["mixture"]["field"] == "meta.redpajama_set_name"
    assert {p: v["target_tokens"] for p, v in manifest["mixture"]["parts"].items()} == {"alpha": 5000, "beta": 5000, "gamma": 10000}
    assert manifest["mixture"]["other_documents_skipped"] > 0


def test_a_mixture_part_too_small_is_reported_short(project_copy):
    """gamma is 10% of 3000 short documents: a 70% share of 60,000 tokens cannot be filled; the whole
    source is read and the manifest says how far each part got."""
    with_mixture(project_copy, {"alpha": 0.3, "gamma": 0.7}, 60_000)
    result = prepare(project_copy, corpus="extra")
    parts = json.loads((project_copy / "data/tokens/extra/val/manifest.json").read_text())["mixture"]["parts"]
    assert parts["gamma"]["tokens"] < parts["gamma"]["target_tokens"] == 42_000
    assert parts["alpha"]["tokens"] >= parts["alpha"]["target_tokens"] == 18_000
    assert "the source ended before these parts reached their share: gamma" in result.stderr


@pytest.mark.bad_input
def test_a_record_without_the_mixture_field_is_refused_naming_file_and_line(project_copy):
    (project_copy / "mixed.jsonl").write_text('{"text": "a", "meta": {"redpajama_set_name": "alpha"}}\n{"text": "b", "meta": {}}\n')
    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "jsonl", "path": "mixed.jsonl", "max_tokens": 1000,
                                          "mixture": {"field": "meta.redpajama_set_name", "weights": {"alpha": 1}}}}
    write_params(project_copy / "params.yaml", params)
    result = prepare(project_copy, corpus="extra", check=False)
    assert result.returncode == 1 and "mixed.jsonl:2: line has no field 'meta.redpajama_set_name'" in result.stderr


@pytest.mark.bad_input
@pytest.mark.parametrize("mixture, max_tokens, expected", [
    ({"field": "meta.x", "weights": {"a": 1}}, None, "corpora.extra.val.mixture: needs corpora.extra.val.max_tokens"),
    ({"field": "meta.x", "weights": {"a": 0}}, 100, "corpora.extra.val.mixture.weights.a: 0.0 must be > 0"),
    ({"field": "meta.x", "weights": {}}, 100, "corpora.extra.val.mixture.weights: give at least one part"),
    ({"field": "", "weights": {"a": 1}}, 100, "corpora.extra.val.mixture.field: must name a field"),
])
def test_bad_mixtures_are_refused(mixture, max_tokens, expected):
    from rewarm import config as cfg

    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "demo", "domain": "news", "documents": 10, "max_tokens": max_tokens, "mixture": mixture}}
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.from_dict(params)
    assert expected in str(caught.value)
