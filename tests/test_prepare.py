"""The `prepare` stage end to end through the real command line: round trip, manifest,
determinism across worker counts, budgets, atomicity when killed, and clear errors."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rewarm import config as cfg
from rewarm import grid
from rewarm.data import sources
from rewarm.data import tokenizer as tok
from rewarm.data.shards import ShardReader
from rewarm.io import file_sha256
from tests.project import rewarm, run_env, small_params, write_params


def prepare(project: Path, corpus: str = "upstream", workers: int = 1, out: str | None = None, check: bool = True):
    out = out or f"data/tokens/{corpus}"
    return rewarm(
        "prepare", "--corpus", corpus, "--tokenizer", "data/tokenizer", "--out", out, "--workers", str(workers),
        cwd=project, check=check,
    )


def shard_digests(split_dir: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(split_dir.iterdir())}


@pytest.fixture(scope="module")
def prepared(small_project, tmp_path_factory) -> Path:
    """The small project's upstream corpus prepared with one worker, into a separate directory."""
    out = tmp_path_factory.mktemp("prepared") / "upstream"
    prepare(small_project, out=str(out))
    return out


def documents(project: Path, corpus: str, split: str, files: int = 1) -> list[list[str]]:
    """The documents of each of a demo source's files, read straight from the files."""
    return [list(sources.read_jsonl(sources.demo_path(project / "data/raw", corpus, split, i, files), "text", sources.ReadStats()))
            for i in range(files)]


def decoded_documents(reader: ShardReader, rows: range, hf) -> list[str]:
    """The whole documents (ending in EOS) in these rows, decoded."""
    stream = np.concatenate([reader[i] for i in rows]).astype(np.int64)
    pieces = np.split(stream, np.flatnonzero(stream == hf.eos_token_id) + 1)
    return [hf.decode(piece[:-1].tolist()) for piece in pieces if len(piece) and piece[-1] == hf.eos_token_id]


def test_round_trip_gives_back_the_documents_in_order(small_project, prepared):
    """Each unit (here: each of the train split's 3 files) is packed on its own: its rows give back
    its file's documents in order, up to the tail its last row could not hold."""
    hf = tok.load(small_project / "data/tokenizer")
    for split, files in (("train", 3), ("val", 1)):
        reader = ShardReader(prepared / split, tokenizer_fingerprint=tok.fingerprint(hf))
        manifest = reader.manifest
        assert [unit["unit"] for unit in manifest["units"]] == list(range(files))
        start = 0
        for unit, docs in zip(manifest["units"], documents(small_project, "upstream", split, files)):
            decoded = decoded_documents(reader, range(start, start + unit["sequences"]), hf)
            start += unit["sequences"]
            assert decoded == docs[: len(decoded)]
            assert len(decoded) >= len(docs) - 3
            # The unit's first row starts with its file's first document (no tail of the file before).
            assert hf.decode(reader[start - unit["sequences"]][:8].tolist()) == hf.decode(hf.encode(docs[0], add_special_tokens=False)[:8])
        assert start == len(reader)


def test_manifest_describes_the_shards(small_project, prepared):
    manifest = json.loads((prepared / "train" / "manifest.json").read_text())
    hf = tok.load(small_project / "data/tokenizer")
    assert manifest["schema_version"] == 3
    assert (manifest["corpus"], manifest["split"]) == ("upstream", "train")
    assert manifest["tokenizer"]["fingerprint"] == tok.fingerprint(hf)
    assert manifest["dtype"] == "uint16" and manifest["seq_len"] == 64
    assert manifest["documents_read"] == 600 and manifest["documents_skipped"] == 0
    assert manifest["tokens_written"] == manifest["sequences"] * 64
    assert 0 <= manifest["tokens_dropped"] < 3 * 64  # at most one partial row per unit
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["sequences"] == sum(u["sequences"] for u in manifest["units"])
    assert [s["file"] for s in manifest["shards"]] == sorted(p.name for p in (prepared / "train").glob("*.arrow"))
    for unit in range(3):  # each unit's shards are full but its last
        rows = [s["rows"] for s in manifest["shards"] if s["file"].startswith(f"shard-{unit:05d}-")]
        assert rows and all(r == 128 for r in rows[:-1])
    assert manifest["source"]["config"]["type"] == "demo"
    assert all(f"upstream/train-0000{i}-of-00003.jsonl.zst" in manifest["source"]["description"] for i in range(3))
    files = [sources.demo_path(small_project / "data/raw", "upstream", "train", i, 3) for i in range(3)]

    source = grid.from_dict(small_params()).corpora["upstream"].train
    assert manifest["source"]["fingerprint"] == sources.fingerprint(source, files)


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


# -- parts: a corpus prepared as independent jobs, then assembled ---------------------------------------


def prepare_in_parts(project: Path, params: dict, corpus: str, out: Path, parts: int) -> dict[str, dict]:
    """`prepare --part p` for every part, then `assemble`, in this process (as the jobs run them)."""
    from rewarm import prepare as stage

    config = grid.from_dict(cfg.deep_merge(params, {"prepare": {"parts": parts}}))
    part_dirs = [out.parent / f"{out.name}.parts" / str(p) for p in range(parts)]
    with contextlib.chdir(project):  # the manifests name the sources as the jobs do, from the project's root
        for p, part_dir in enumerate(reversed(part_dirs)):  # any order: the parts are independent
            stage.prepare_corpus(config, corpus, "data/tokenizer", "data/raw", part_dir, part=parts - 1 - p)
        return stage.assemble(config, corpus, part_dirs, out)


def tree_digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): file_sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_shards_are_the_same_for_1_2_and_3_parts(small_project, prepared, tmp_path):
    """The train split's 3 files are units: in 2 parts (2 + 1 files) or 3 (one each), the assembled
    shards and manifests are byte-identical to `prepare` of the whole corpus (the `prepared` fixture,
    one process through the command line). The val split's one file is part 0's; the others have
    nothing of it to do."""
    for parts in (2, 3):
        out = tmp_path / f"in{parts}" / "upstream"
        prepare_in_parts(small_project, small_params(), "upstream", out, parts)
        assert tree_digests(out) == tree_digests(prepared)
        records = [json.loads((out.parent / "upstream.parts" / str(p) / "val" / "part.json").read_text()) for p in range(parts)]
        assert [[u["unit"] for u in r["units"]] for r in records] == [[0]] + [[]] * (parts - 1)
    two = [json.loads((tmp_path / "in2/upstream.parts" / str(p) / "train/part.json").read_text()) for p in range(2)]
    assert [[u["unit"] for u in r["units"]] for r in two] == [[0, 1], [2]]
    # Assembled shards are links to the parts' files where the filesystem allows (no copy).
    first = json.loads((tmp_path / "in2/upstream/train/manifest.json").read_text())["shards"][0]["file"]
    assert (tmp_path / "in2/upstream/train" / first).samefile(tmp_path / "in2/upstream.parts/0/train" / first)


def shares_by_hand(total: int, sizes: list[int]) -> list[int]:
    """Largest-remainder shares of `total` in proportion to `sizes`, with exact fractions."""
    from fractions import Fraction

    exact = [Fraction(total * size, sum(sizes)) for size in sizes]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def test_token_budget_is_shared_by_file_size_and_holds_in_parts(small_project, tmp_path):
    """max_tokens over 3 files: each file's share, in whole rows, is in proportion to its size; the
    split holds the budget exactly, in whole rows, the same in 1 and 2 parts."""
    params = small_params()
    params["corpora"]["upstream"]["train"]["max_tokens"] = 5000
    manifests = [prepare_in_parts(small_project, params, "upstream", tmp_path / f"in{n}" / "upstream", n)["train"] for n in (1, 2)]
    assert manifests[0] == manifests[1]
    manifest = manifests[0]
    assert manifest["tokens_written"] == (5000 // 64) * 64
    sizes = [sources.demo_path(small_project / "data/raw", "upstream", "train", i, 3).stat().st_size for i in range(3)]
    rows = shares_by_hand(5000 // 64, sizes)
    assert sum(rows) == 78 and max(rows) - min(rows) <= 1  # three files of about one size
    assert [u["target_tokens"] for u in manifest["units"]] == [r * 64 for r in rows]
    assert [u["tokens_written"] for u in manifest["units"]] == [r * 64 for r in rows]  # each file had enough
    assert tree_digests(tmp_path / "in1/upstream") == tree_digests(tmp_path / "in2/upstream")


@pytest.mark.parametrize("total, weights", [(10, [1, 1, 1]), (7, [0, 0]), (78, [5212, 5301, 5187]), (1, [3, 1]), (5, [])])
def test_budget_shares_are_largest_remainders(total, weights):
    shares = sources.allocate(total, weights)
    assert shares == (shares_by_hand(total, weights or [1]) if weights and any(weights) else
                      shares_by_hand(total, [1] * len(weights)) if weights else [])
    assert sources.allocate(10, [1, 1, 1]) == [4, 3, 3]  # by hand: 3 1/3 each, the first takes the extra row


def test_a_hub_dataset_is_read_in_its_shards(small_project, tmp_path):
    """A dataset directory of 3 data files (read through `datasets`, streamed): 3 units, each its
    file's rows; prepared in 2 parts it equals the whole."""
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    docs = documents(small_project, "upstream", "train", 3)
    for i, file_docs in enumerate(docs):
        (repo / f"train-{i:05d}.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in file_docs[:40]))
    params = small_params()
    params["corpora"]["hub"] = {"val": {"type": "hf", "path": str(repo.parent), "split": "train"}}

    split = sources.SplitSource(grid.from_dict(params).corpora["hub"].val, "hub", "val", "data/raw")
    assert [u.name for u in split.units] == ["shard 1 of 3", "shard 2 of 3", "shard 3 of 3"]
    for unit, file_docs in zip(split.units, docs):
        assert [text for text, _ in split.read(unit, sources.ReadStats())] == file_docs[:40]
    whole = prepare_in_parts(small_project, params, "hub", tmp_path / "in1" / "hub", 1)["val"]
    prepare_in_parts(small_project, params, "hub", tmp_path / "in2" / "hub", 2)
    assert tree_digests(tmp_path / "in1/hub") == tree_digests(tmp_path / "in2/hub")
    assert whole["documents_read"] == 120 and len(whole["units"]) == 3


@pytest.mark.bad_input
def test_a_corrupt_record_fails_its_part_and_nothing_is_assembled(project_copy):
    """Two files, one per part; the second's line 3 is broken: that part fails naming file and line,
    and `assemble` without it refuses, writing nothing."""
    (project_copy / "extra").mkdir()
    (project_copy / "extra/a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (project_copy / "extra/b.jsonl").write_text('{"text": "three"}\n{"text": "four"}\n{"text": "broken\n')
    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "jsonl", "path": "extra/*.jsonl"}}
    write_params(project_copy / "params.yaml", params)
    common = ("--corpus", "extra", "--tokenizer", "data/tokenizer")
    rewarm("prepare", *common, "--part", "0", "--out", "data/parts/extra/0", cwd=project_copy)
    failed = rewarm("prepare", *common, "--part", "1", "--out", "data/parts/extra/1", cwd=project_copy, check=False)
    assert failed.returncode == 1 and "extra/b.jsonl:3: not valid JSON" in failed.stderr and "Traceback" not in failed.stderr
    assert not (project_copy / "data/parts/extra/1").exists()
    refused = rewarm("assemble", "--corpus", "extra", "--parts", "data/parts/extra/0", "--out", "data/tokens/extra",
                     cwd=project_copy, check=False)
    assert refused.returncode == 1 and "extra: parts 1 of 2 not given" in refused.stderr
    assert not (project_copy / "data/tokens/extra").exists() and not list((project_copy / "data/tokens").glob("extra*"))
    wrong = rewarm("prepare", *common, "--part", "2", "--out", "data/parts/extra/2", cwd=project_copy, check=False)
    assert wrong.returncode == 2 and "--part: 2 is not a part of this configuration (prepare.parts is 2: 0 to 1)" in wrong.stderr


@pytest.mark.bad_input
def test_a_part_naming_a_shard_outside_its_directory_is_refused(project_copy):
    """A `part.json` edited to name `../../../../x.arrow`: assemble refuses it naming the file, links nothing
    from outside the part, and writes no output."""
    common = ("--corpus", "news", "--tokenizer", "data/tokenizer")
    for part in (0, 1):
        rewarm("prepare", *common, "--part", str(part), "--out", f"data/parts/news/{part}", cwd=project_copy)
    # news ships in one file: the part that holds it has the shard
    record_path, record, shard = next((path, record, shard) for path in sorted(project_copy.glob("data/parts/news/*/val/part.json"))
                                      for record in [json.loads(path.read_text())]
                                      for unit in record["units"] for shard in unit["shards"])
    (project_copy / "x.arrow").write_bytes((record_path.parent / shard["file"]).read_bytes())
    shard["file"] = "../../../../x.arrow"
    record_path.write_text(json.dumps(record))
    refused = rewarm("assemble", "--corpus", "news", "--parts", "data/parts/news/0", "data/parts/news/1", "--out",
                     "data/tokens/news", cwd=project_copy, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"{record_path.relative_to(project_copy)}: shard '../../../../x.arrow' is not a file name inside" in refused.stderr
    assert not (project_copy / "data/tokens/news").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("edit, where", [
    (lambda r: r.pop("part"), "at the top level, 'part' is a required property"),
    (lambda r: r["units"][0].pop("sequences"), "at units[0], 'sequences' is a required property"),
    (lambda r: r["units"][0]["shards"][0].pop("sha256"), "at units[0].shards[0], 'sha256' is a required property"),
])
def test_an_incomplete_part_record_is_refused_naming_the_file_and_field(project_copy, edit, where):
    """A part's record (part.json) missing what assemble reads: refused naming the file and the field (it
    was a KeyError), and no output is written."""
    common = ("--corpus", "news", "--tokenizer", "data/tokenizer")
    for part in (0, 1):
        rewarm("prepare", *common, "--part", str(part), "--out", f"data/parts/news/{part}", cwd=project_copy)
    record_path = next(path for path in sorted(project_copy.glob("data/parts/news/*/val/part.json"))
                       if any(unit["shards"] for unit in json.loads(path.read_text())["units"]))
    record = json.loads(record_path.read_text())
    edit(record)
    record_path.write_text(json.dumps(record))
    refused = rewarm("assemble", "--corpus", "news", "--parts", "data/parts/news/0", "data/parts/news/1", "--out",
                     "data/tokens/news", cwd=project_copy, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"{record_path.relative_to(project_copy)}: part record is incomplete or altered: {where}" in refused.stderr
    assert not (project_copy / "data/tokens/news").exists()


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
    write_params(project_copy / "params.yaml", small_params(prepare={"seq_len": 0, "parts": 0, "threads": 4}))
    result = prepare(project_copy, check=False)
    assert result.returncode == 2
    assert "prepare.seq_len: 0 must be a positive integer" in result.stderr
    assert "prepare.parts: 0 must be a positive integer" in result.stderr
    assert "prepare.threads: unknown key" in result.stderr
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
    while not list(tokens.glob("upstream.partial-*/train/shard-00000-00003.arrow")):
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
def test_a_mixture_part_that_never_occurs_is_refused_naming_the_values_found(project_copy):
    """A misspelled set name ("gamme"): once the whole source is read without one document of it, the
    split is refused naming it and the values that do occur, with their documents; nothing is written."""
    with_mixture(project_copy, {"alpha": 1.0, "gamme": 1.0}, 20_000)
    result = prepare(project_copy, corpus="extra", check=False)
    counts = {}
    for line in (project_copy / "mixed.jsonl").read_text().splitlines():
        name = json.loads(line)["meta"]["redpajama_set_name"]
        counts[name] = counts.get(name, 0) + 1
    found = ", ".join(f"{name} ({counts[name]:,})" for name in ("beta", "gamma", "other"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("extra/val: mixture part 'gamme' never occurs in field meta.redpajama_set_name of " in result.stderr
            and f", read to its end; the other values found, with their documents: {found}" in result.stderr), result.stderr[-2000:]
    assert not (project_copy / "data/tokens/extra").exists()


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

    params = small_params()
    params["corpora"]["extra"] = {"val": {"type": "demo", "domain": "news", "documents": 10, "max_tokens": max_tokens, "mixture": mixture}}
    with pytest.raises(cfg.ConfigError) as caught:
        grid.from_dict(params)
    assert expected in str(caught.value)


def test_a_long_document_is_encoded_in_pieces_to_the_same_ids(hf_tokenizer):
    """A document longer than the piece limit is encoded a piece at a time (memory bounded by the piece),
    cut before a space that starts a word: the ids equal those of the whole document, for text with runs of
    spaces, newlines, digits, punctuation and contractions at the cuts; a piece limit of 1,000 characters
    here stands for 1,048,576."""
    import random

    from rewarm import prepare as stage

    rng = random.Random(5)
    words = ["alpha", "beta", "it's", "1999", "--", "(x)", "naïve", "  spaced", "\n", "\n\n ", "end.", "  ", "東京"]
    text = " ".join(rng.choice(words) for _ in range(20_000))
    backend = hf_tokenizer.backend_tokenizer
    whole = backend.encode(text, add_special_tokens=False).ids
    cut = stage.pieces(text, 1000)
    assert len(cut) > 50 and "".join(cut) == text and max(map(len, cut)) <= 1000
    _, _, (ids, short) = stage._encode(backend, [(text, None), ("short text", None)], (0, 0), limit=1000)
    assert ids == whole and short == backend.encode("short text", add_special_tokens=False).ids
    assert stage.pieces("x" * 2500, 1000) == ["x" * 1000, "x" * 1000, "x" * 500]  # no space at all: cut at the limit


def test_a_tokenizer_that_begins_texts_with_bos_packs_bos_before_every_document(project_copy):
    """Issue 33: a family pre-trained with BOS + document + EOS (Llama 3: its tokenizer's post-processor
    adds BOS) is packed so; the manifest records the prefix; the prefix is in the tokenizer's fingerprint,
    so these shards are refused for a model whose tokenizer has none (and the demo's has none)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    plain = tok.load(project_copy / "data/tokenizer")
    assert tok.document_prefix(plain) == []
    backend = Tokenizer.from_str(plain.backend_tokenizer.to_str())
    backend.add_special_tokens(["<bos>"])
    bos = backend.token_to_id("<bos>")
    backend.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token=tok.EOS_TOKEN,
                            pad_token=tok.PAD_TOKEN).save_pretrained(str(project_copy / "data/tokenizer-bos"))
    with_bos = tok.load(project_copy / "data/tokenizer-bos")
    assert tok.document_prefix(with_bos) == [bos] and tok.fingerprint(with_bos) != tok.fingerprint(plain)
    rewarm("prepare", "--corpus", "upstream", "--tokenizer", "data/tokenizer-bos", "--out", "data/tokens-bos", cwd=project_copy)

    reader = ShardReader(project_copy / "data/tokens-bos/train", tokenizer_fingerprint=tok.fingerprint(with_bos))
    assert reader.manifest["tokenizer"]["document_prefix"] == [bos]
    unit = reader.manifest["units"][0]
    stream = np.concatenate([reader[i] for i in range(unit["sequences"])]).tolist()
    # The first file's documents as the tokenizer itself encodes them with its special tokens, each then EOS.
    expected = [i for text in documents(project_copy, "upstream", "train", 3)[0] for i in with_bos(text)["input_ids"] + [with_bos.eos_token_id]]
    assert stream == expected[:len(stream)] and stream[0] == bos
    with pytest.raises(Exception, match="shards were tokenized with tokenizer"):
        ShardReader(project_copy / "data/tokens-bos/train", tokenizer_fingerprint=tok.fingerprint(plain))
